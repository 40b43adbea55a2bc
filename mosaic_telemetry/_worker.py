"""The worker: one daemon thread per client and process that drains the outbox.

It is small enough to state: ``start()``; ``wake()`` (batch_size events pending, a flush,
a stop); ``flush(timeout)`` waits for a drain; ``stop(timeout)`` runs one bounded final drain
and returns. Each drain claims up to ``batch_size`` rows under a lease, sends them through
one tenacity policy (exponential backoff with jitter, Retry-After as a minimum, cut short by
the stop event), and applies the server's verdicts: acknowledged rows are deleted, rejected
ones dead-lettered, the rest released for the next cycle. Nothing is dropped here.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs

from ._exceptions import OutboxError, TelemetryError
from ._log import RateLimitedLogger, logger
from ._store import META_LAST_ERROR, ClaimedRow, LeaseOwner
from ._transport import SendKind, SendResult

__all__ = ["FlushResult", "Handoff", "Stats", "Worker", "WorkerSettings"]

#: A Retry-After up to this long is waited inside the retry loop; a longer one ends the cycle
#: and is kept in the outbox's shared "not before" time instead (the lease is released).
MAX_INLINE_RETRY_AFTER = 30.0
#: First pause after a 401/403 or other refusal; doubles up to the submit interval.
FIRST_PAUSE_SECONDS = 30.0
_NOTHING_SENT = SendResult(kind=SendKind.OK, status=None, verdicts={})


class Sender(Protocol):
    """What the worker needs of a transport (the real one, or the dry-run logger)."""

    def send_events(
        self, event_texts: Sequence[str], *, timeout: float | None = None
    ) -> SendResult: ...

    def close(self) -> None: ...


class Outbox(Protocol):
    """What the worker needs of an outbox (SQLite or the memory fallback)."""

    def add_many(self, items: Sequence[tuple[str, str]]) -> tuple[int, int]: ...
    def claim(self, owner: LeaseOwner, limit: int, lease_seconds: float) -> list[ClaimedRow]: ...
    def renew(
        self, owner: LeaseOwner, row_ids: Sequence[int], lease_seconds: float
    ) -> list[int]: ...
    def release(
        self, owner: LeaseOwner, row_ids: Sequence[int], *, retry_at: float | None = None
    ) -> None: ...
    def ack(self, delivered: Sequence[int], duplicates: Sequence[int] = ()) -> None: ...
    def dead_letter(self, rows: Sequence[tuple[int, str, int | None]]) -> int: ...
    def reclaim_orphaned_leases(self, is_alive: Callable[[int], bool] | None = None) -> int: ...
    def add(self, event_id: str, body: str) -> tuple[bool, int]: ...
    def pending_count(self) -> int: ...
    def dead_count(self) -> int: ...
    def oldest_pending_age(self) -> float | None: ...
    def get_not_before(self) -> float: ...
    def set_not_before(self, when: float) -> None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def bump(self, name: str, n: int = 1) -> None: ...
    def checkpoint(self) -> None: ...
    def ensure_file(self) -> int: ...


@attrs.frozen
class FlushResult:
    """What a ``flush()`` achieved: events delivered meanwhile and events still pending."""

    delivered: int
    remaining: int
    dead_lettered: int = 0
    timed_out: bool = False


class Stats:
    """Thread-safe counters of one client (``stats()`` adds the outbox's figures)."""

    NAMES = (
        "tracked",
        "delivered",
        "duplicates",
        "retried",
        "dead_lettered",
        "evicted",
        "handed_off",
        "lost",
        "invalid",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.NAMES, 0)
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self._lock:
            self._counts[name] += n

    def get(self, name: str) -> int:
        """The value of counter ``name``."""
        with self._lock:
            return self._counts[name]

    def error(self, text: str, at: float) -> None:
        """Remember the last background error (shown by stats())."""
        with self._lock:
            self.last_error, self.last_error_at = text, at

    def snapshot(self) -> dict[str, Any]:
        """A copy of every counter plus the last error."""
        with self._lock:
            return {
                **self._counts,
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
            }


class Handoff:
    """A bounded in-memory queue of events ``track()`` could not write in time.

    Used only when another process held the outbox write lock for longer than the few
    milliseconds ``track()`` may wait: the worker persists these moments later. This is the
    one window in which a kill -9 can lose a tracked event; it is counted in ``handed_off``.
    """

    def __init__(self, capacity: int) -> None:
        self._lock = threading.Lock()
        self._items: deque[tuple[str, str]] = deque()
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event_id: str, text: str) -> bool:
        """Queue one event; False when full (the caller counts it lost)."""
        with self._lock:
            if len(self._items) >= self._capacity:
                return False
            self._items.append((event_id, text))
            return True

    def take_all(self) -> list[tuple[str, str]]:
        """Remove and return everything queued."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            return items

    def put_back(self, items: Sequence[tuple[str, str]]) -> None:
        """Return items the worker could not persist to the front of the queue."""
        with self._lock:
            self._items.extendleft(reversed(items))


@attrs.frozen
class WorkerSettings:
    """The numbers a worker runs by (already validated by the client)."""

    batch_size: int
    submit_interval: float
    request_timeout: float
    max_retries: int
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    @property
    def lease_seconds(self) -> float:
        """A lease outlives one request (renewed before each attempt): about 2x the timeout."""
        return 2.0 * self.request_timeout + 5.0


class Worker:
    """Drains one outbox to one sender from a daemon thread."""

    def __init__(
        self,
        *,
        outbox: Callable[[], Outbox],
        sender_factory: Callable[[], Sender | None],
        handoff: Handoff,
        stats: Stats,
        settings: WorkerSettings,
        on_error: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.time,
        log: RateLimitedLogger | None = None,
        name: str = "mosaic-telemetry-worker",
    ) -> None:
        self._outbox = outbox
        self._sender_factory = sender_factory
        self._handoff = handoff
        self._stats = stats
        self._settings = settings
        self._on_error = on_error
        self._clock = clock
        self._log = log or RateLimitedLogger()
        self._name = name
        self._owner = LeaseOwner.for_this_process()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self._flush_asked = 0
        self._flush_served = 0
        self._thread: threading.Thread | None = None
        self._sender: Sender | None = None
        self._retrying: Callable[[Callable[[], SendResult]], SendResult] | None = None
        self._stop_deadline = float("inf")
        self._retry_at = 0.0  # after a failed cycle: the next timed cycle (a flush goes at once)
        self._paused_until = 0.0  # after 401/403 and other refusals: nothing is sent before
        self._pause_seconds = FIRST_PAUSE_SECONDS

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Ask for a drain now."""
        self._wake.set()

    def stop(self, timeout: float, *, wait: bool = True) -> bool:
        """Run a final drain bounded by ``timeout`` seconds; True if the thread ended in time.

        ``wait=False`` only asks for it; a later ``stop()`` waits, keeping the first deadline.
        """
        if not self._stopping.is_set():
            self._stop_deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if not wait or thread is None or thread is threading.current_thread():
            return True
        thread.join(max(0.0, self._stop_deadline - time.monotonic()) + 0.2)
        return not thread.is_alive()

    def flush(self, timeout: float | None) -> bool:
        """Wait until a drain that started after this call has ended; False on timeout."""
        with self._cond:
            self._flush_asked += 1
            ticket = self._flush_asked
        self._wake.set()
        with self._cond:
            return self._cond.wait_for(
                lambda: self._flush_served >= ticket or not self.alive, timeout
            )

    # --- the loop -------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            try:
                self._sender = self._sender_factory()
            except Exception as exc:  # e.g. an unusable URL: keep events, never die
                self._report("sender", exc, f"telemetry sending disabled: {exc!r}")
            if self._sender is not None:
                from ._retry import make_retrying

                self._retrying = make_retrying(
                    max_retries=self._settings.max_retries,
                    stop_event=self._stopping,
                    is_retryable=_is_retryable,
                    retry_after_of=lambda result: result.retry_after,
                    base=self._settings.backoff_base,
                    cap=self._settings.backoff_cap,
                    before_sleep=self._before_retry,
                )
            self._safe(self._reclaim)
            while not self._stopping.is_set():
                self._wake.wait(self._next_wait())
                self._wake.clear()
                if self._stopping.is_set():
                    break
                self._cycle()
            self._cycle(final=True)
        finally:
            if self._sender is not None:
                self._safe(self._sender.close)
            with self._cond:
                self._flush_served = self._flush_asked
                self._cond.notify_all()

    def _next_wait(self) -> float:
        wait = self._settings.submit_interval
        resume = max(self._retry_at, self._paused_until)
        if resume:
            wait = min(wait, max(0.0, resume - self._clock()))
        return wait

    def _cycle(self, *, final: bool = False) -> None:
        with self._cond:
            asked = self._flush_asked
            forced = final or asked > self._flush_served
        self._safe(lambda: self._outbox().ensure_file())  # the file deleted under us: recreate
        self._safe(self._persist_handoff_or_report)
        self._safe(lambda: self._drain(final=final, forced=forced))
        self._safe(lambda: self._outbox().checkpoint())
        with self._cond:
            self._flush_served = max(self._flush_served, asked)
            self._cond.notify_all()

    def _safe(self, step: Callable[[], object]) -> None:
        """Run one step; the loop never dies of an error, it logs and reports it."""
        try:
            step()
        except Exception as exc:
            self._report("worker", exc, f"telemetry worker step failed: {exc!r}")

    def _report(self, key: str, exc: BaseException | None, text: str) -> None:
        now = self._clock()
        self._stats.error(text, now)
        if not isinstance(exc, OutboxError):  # kept in the file for `mosaic-telemetry status`
            with contextlib.suppress(Exception):
                self._outbox().set_meta(META_LAST_ERROR, json.dumps({"at": now, "error": text}))
        self._log.error(key, "%s", text)
        if self._on_error is not None and exc is not None:
            try:
                self._on_error(exc)
            except Exception:
                logger.debug("on_error callback raised", exc_info=True)

    def _reclaim(self) -> None:
        reclaimed = self._outbox().reclaim_orphaned_leases()
        if reclaimed:
            logger.info("reclaimed %d events leased by a process that is gone", reclaimed)

    def _persist_handoff_or_report(self) -> None:
        try:
            self._persist_handoff()
        except OutboxError as exc:
            # The key track() logs the same failure under: one line for the host, not two.
            self._report(
                "outbox-write",
                exc,
                f"telemetry outbox write failed ({exc}); {len(self._handoff)} events are "
                "held in memory until the outbox accepts them",
            )

    def _persist_handoff(self) -> None:
        items = self._handoff.take_all()
        # In batches: on a nearly full disk what fits is written (and sent, freeing room for
        # the rest); all at once, one transaction too big to fit kept every event in memory.
        step = self._settings.batch_size
        for start in range(0, len(items), step):
            try:
                _inserted, evicted = self._outbox().add_many(items[start : start + step])
            except OutboxError:
                self._handoff.put_back(items[start:])
                raise
            if evicted:
                self._stats.add("evicted", evicted)

    def _drain(self, *, final: bool, forced: bool) -> None:
        """Send batches until the outbox is empty, a batch fails, or sending must wait."""
        if self._sender is None or self._retrying is None:
            return
        outbox = self._outbox()
        self._safe(self._reclaim)
        while final or not self._stopping.is_set():
            now = self._clock()
            if final and time.monotonic() >= self._stop_deadline:
                return
            not_before = max(outbox.get_not_before(), self._paused_until)
            if not forced:
                not_before = max(not_before, self._retry_at)
            if now < not_before:
                self._retry_at = max(self._retry_at, not_before)
                return
            rows = outbox.claim(
                self._owner, self._settings.batch_size, self._settings.lease_seconds
            )
            if not rows:
                self._retry_at = 0.0
                return
            if not self._deliver(outbox, rows):
                return
            if len(rows) < self._settings.batch_size and not (final or forced):
                # The outbox ran dry: wait for the next wake instead of sending each new
                # event alone as track() adds it (many tiny batches under a steady load).
                self._retry_at = 0.0
                return

    # --- one batch ------------------------------------------------------------------------
    def _request_timeout(self) -> float:
        timeout = self._settings.request_timeout
        if self._stopping.is_set():
            timeout = min(timeout, max(0.05, self._stop_deadline - time.monotonic()))
        return timeout

    def _deliver(self, outbox: Outbox, rows: list[ClaimedRow]) -> bool:
        """Send ``rows`` (leased by us); True when the drain may go on with the next batch."""
        assert self._sender is not None and self._retrying is not None
        sender = self._sender
        current = rows

        def attempt() -> SendResult:
            nonlocal current
            owned = set(
                outbox.renew(self._owner, [r.row_id for r in current], self._settings.lease_seconds)
            )
            current = [r for r in current if r.row_id in owned]
            if not current:
                return _NOTHING_SENT
            return sender.send_events([r.body for r in current], timeout=self._request_timeout())

        try:
            result = self._retrying(attempt)
        except Exception:
            outbox.release(self._owner, [r.row_id for r in current])
            raise
        return self._apply(outbox, current, result)

    def _apply(self, outbox: Outbox, rows: list[ClaimedRow], result: SendResult) -> bool:
        kind = result.kind
        if kind is SendKind.OK:
            self._accept(outbox, rows, result)
            return True
        if kind is SendKind.INVALID and result.invalid:
            bad = [
                (rows[i].row_id, f"rejected by server (422): {reason}", result.status)
                for i, reason in sorted(result.invalid.items())
            ]
            self._dead_letter(outbox, bad)
            rest = [row for i, row in enumerate(rows) if i not in result.invalid]
            return self._deliver(outbox, rest) if rest else True
        if kind in (SendKind.TOO_LARGE, SendKind.BAD_REQUEST, SendKind.INVALID):
            return self._split(outbox, rows, result)
        ids = [r.row_id for r in rows]
        outbox.release(self._owner, ids)
        if kind is SendKind.RETRY:
            if result.retry_after:
                outbox.set_not_before(self._clock() + result.retry_after)
            text = (
                f"server unavailable ({result.detail or result.status}); "
                f"{len(rows)} events kept for the next cycle"
            )
            self._report("send", TelemetryError(text), text)
            self._retry_at = self._clock() + self._settings.submit_interval
            return False
        # AUTH or CLIENT_ERROR: keep every event and pause, logging once per pause.
        pause = min(self._pause_seconds, self._settings.submit_interval)
        self._pause_seconds = min(self._pause_seconds * 2, self._settings.submit_interval)
        self._paused_until = self._clock() + pause
        text = (
            f"server refused the batch (HTTP {result.status}: {result.detail}); "
            f"{len(rows)} events kept, sending paused for {pause:.0f} s"
        )
        self._report("refused", TelemetryError(text), text)
        return False

    def _accept(self, outbox: Outbox, rows: list[ClaimedRow], result: SendResult) -> None:
        verdicts = result.verdicts
        delivered: list[int] = []
        duplicates: list[int] = []
        rejected: list[tuple[int, str, int | None]] = []
        missing: list[int] = []
        for row in rows:
            verdict = None if verdicts is None else verdicts.get(row.event_id)
            if verdicts is None or (verdict is not None and verdict[0] == "accepted"):
                delivered.append(row.row_id)
            elif verdict is None:
                missing.append(row.row_id)
            elif verdict[0] == "duplicate":
                duplicates.append(row.row_id)
            else:
                rejected.append(
                    (
                        row.row_id,
                        f"rejected by server: {verdict[1] or 'no reason given'}",
                        result.status,
                    )
                )
        if delivered or duplicates:
            outbox.ack(delivered, duplicates)
            self._stats.add("delivered", len(delivered))
            self._stats.add("duplicates", len(duplicates))
        if rejected:
            self._dead_letter(outbox, rejected)
        if missing:
            # The reply named some events but not these: resend them later (the server dedups).
            outbox.release(self._owner, missing)
            self._log.warning(
                "missing-verdicts",
                "server reply had no verdict for %d events; they will be resent",
                len(missing),
            )
        if rows and result is not _NOTHING_SENT:
            self._pause_seconds = FIRST_PAUSE_SECONDS
            self._log.reset("send")
            self._log.reset("refused")

    def _split(self, outbox: Outbox, rows: list[ClaimedRow], result: SendResult) -> bool:
        """A batch the server cannot take as is: halves go apart; a single event dead-letters."""
        if len(rows) == 1:
            reason = f"refused by server (HTTP {result.status}): {result.detail}"
            self._dead_letter(outbox, [(rows[0].row_id, reason, result.status)])
            return True
        middle = len(rows) // 2
        first, second = rows[:middle], rows[middle:]
        if not self._deliver(outbox, first):
            outbox.release(self._owner, [r.row_id for r in second])
            return False
        return self._deliver(outbox, second)

    def _dead_letter(self, outbox: Outbox, rows: list[tuple[int, str, int | None]]) -> None:
        moved = outbox.dead_letter(rows)
        self._stats.add("dead_lettered", moved)
        self._log.warning(
            "dead-letter", "%d events moved to the dead-letter table: %s", moved, rows[0][1]
        )

    def _before_retry(self, result: SendResult, seconds: float) -> None:
        self._stats.add("retried")
        self._safe(lambda: self._outbox().bump("retried"))
        logger.info(
            "batch not delivered (%s); retrying in %.1f s", result.detail or result.status, seconds
        )


def _is_retryable(result: SendResult) -> bool:
    return result.kind is SendKind.RETRY and (
        result.retry_after is None or result.retry_after <= MAX_INLINE_RETRY_AFTER
    )
