"""The worker: one daemon thread per client and process that drains the outbox.

It is small enough to state: ``start()``; ``wake()`` (batch_size events pending, a flush, a
stop); ``flush(timeout)`` waits for a drain; ``stop(timeout)`` runs one bounded final drain
and returns. Each drain claims up to ``batch_size`` rows under a lease, sends them through one
tenacity policy (exponential backoff with jitter, Retry-After as a minimum, cut short by the
stop event) and applies the plan ``policy.plan_batch`` makes of the reply. Nothing is dropped.

Clocks: every wait of this process (backoff, pauses, the stop deadline) is on ``monotonic``;
``clock`` (wall time) is used only for what other processes must read in the outbox (the
shared pause, lease expiry, the backoff of unanswered rows). The shared pause is stored with
the length it was set for, and each process obeys it for at most that long on its own
monotonic clock from when it first saw it, so a wall clock stepped back cannot stretch it; a
pause of an older file (no length) further ahead than any Retry-After we honour is taken for a
clock step and ignored. No import happens on the worker thread: everything it
runs is imported before the thread starts (a fork during an import on another thread leaves
the child with a half-initialised module).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence

from .._exceptions import OutboxError, TelemetryError
from .._log import RateLimitedLogger, logger
from .._store import META_LAST_ERROR
from .._wire.replies import SendKind, SendResult
from .policy import Next, Plan, is_retryable, plan_batch, verdict_backoff
from .ports import ClaimedRow, Outbox, Sender
from .retry import make_retrying
from .stats import Stats, WorkerSettings

__all__ = ["FIRST_PAUSE_SECONDS", "Worker"]

#: First pause after a 401/403 or other refusal; doubles up to the submit interval.
FIRST_PAUSE_SECONDS = 30.0
_NOTHING_SENT = SendResult(kind=SendKind.OK, status=None, verdicts={})


class Worker:
    """Drains one outbox to one sender, from a daemon thread or one ``run_cycle()`` at a time."""

    def __init__(
        self,
        *,
        outbox: Callable[[], Outbox],
        sender: Sender | None,
        stats: Stats,
        settings: WorkerSettings,
        on_error: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        log: RateLimitedLogger | None = None,
        name: str = "mosaic-telemetry-worker",
    ) -> None:
        self._outbox = outbox
        self._sender = sender
        self._stats = stats
        self._settings = settings
        self._on_error = on_error
        self._clock = clock
        self._mono = monotonic
        self._log = log or RateLimitedLogger()
        self._name = name
        self._owner = outbox().lease_owner()  # its presence token: peers see it alive
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self._flush_asked = 0
        self._flush_served = 0
        self._thread: threading.Thread | None = None
        self._retrying = make_retrying(
            max_retries=settings.max_retries,
            stop_event=self._stopping,
            is_retryable=is_retryable,
            retry_after_of=lambda result: result.retry_after,
            base=settings.backoff_base,
            cap=settings.backoff_cap,
            sleep=sleep,
            before_sleep=self._before_retry,
        )
        self._stop_deadline = float("inf")
        # Monotonic deadlines of this process.
        self._retry_at = 0.0  # after a failed cycle: the next timed cycle (a flush goes at once)
        self._paused_until = 0.0  # after 401/403 and other refusals: nothing is sent before
        self._wake_at = float("inf")  # rows given back with a backoff become due then
        self._pause_seconds = FIRST_PAUSE_SECONDS
        #: The shared pause as first seen: (its not_before in the file, our monotonic end).
        self._shared_seen: tuple[float, float] | None = None

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
            self._stop_deadline = self._mono() + timeout
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if not wait or thread is None or thread is threading.current_thread():
            return True
        thread.join(max(0.0, self._stop_deadline - self._mono()) + 0.2)
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
            self._safe(self._reclaim)
            while not self._stopping.is_set():
                self._wake.wait(self._next_wait())
                self._wake.clear()
                if self._stopping.is_set():
                    break
                self.run_cycle()
            self.run_cycle(final=True)
        finally:
            if self._sender is not None:
                self._safe(self._sender.close)
            with self._cond:
                self._flush_served = self._flush_asked
                self._cond.notify_all()

    def _next_wait(self) -> float:
        now = self._mono()
        wait = self._settings.submit_interval
        resume = max(self._retry_at, self._paused_until)
        if resume:
            wait = min(wait, resume - now)
        return max(0.0, min(wait, self._wake_at - now))

    def run_cycle(self, *, final: bool = False) -> None:
        """One cycle: repair the file, absorb the spool, drain, checkpoint; never raises."""
        with self._cond:
            asked = self._flush_asked
            forced = final or asked > self._flush_served
        self._safe(lambda: self._outbox().ensure_file())  # the file deleted under us: recreate
        self._safe(self._absorb)  # what track() spooled while the outbox was locked
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

    def _absorb(self) -> None:
        try:
            self._outbox().absorb()
        except OutboxError as exc:
            # The key track() logs the same failure under: one line for the host, not two.
            self._report(
                "outbox-write",
                exc,
                f"telemetry outbox write failed ({exc}); spooled events stay in this "
                "process's spool until the outbox accepts them",
            )

    def _shared_wait(self, outbox: Outbox) -> float:
        """Seconds until the shared pause ends for this process (monotonic, clamped).

        A pause is obeyed for at most the length it was set for, from when this process first
        saw it: a wall clock stepped back makes it look further ahead, never last longer.
        """
        until, seconds = outbox.get_pause()
        remaining = until - self._clock()
        if remaining <= 0:
            self._shared_seen = None
            return 0.0
        now = self._mono()
        seen = self._shared_seen
        if seen is not None and seen[0] == until:
            return max(0.0, seen[1] - now)
        cap = self._settings.max_shared_pause
        if seconds is None and remaining > cap:  # a file of an earlier build: no length stored
            self._log.warning(
                "stale-pause",
                "ignoring a stored sending pause %.0f s ahead (more than the %.0f s cap; the "
                "wall clock was probably stepped back)",
                remaining,
                cap,
            )
            return 0.0
        limit = cap if seconds is None else min(cap, max(0.0, seconds))
        if remaining > limit + 1.0:
            self._log.warning(
                "stale-pause",
                "a stored sending pause of %.0f s lies %.0f s ahead (the wall clock was "
                "stepped back); waiting %.0f s",
                limit,
                remaining,
                limit,
            )
        wait = min(remaining, limit)
        self._shared_seen = (until, now + wait)
        return wait

    def _drain(self, *, final: bool, forced: bool) -> None:
        """Send batches until the outbox is empty, a batch fails, or sending must wait."""
        if self._sender is None:
            return
        outbox = self._outbox()
        self._safe(self._reclaim)
        self._wake_at = float("inf")
        while final or not self._stopping.is_set():
            now = self._mono()
            if final and now >= self._stop_deadline:
                return
            resume = max(now + self._shared_wait(outbox), self._paused_until)
            if not forced:
                resume = max(resume, self._retry_at)
            if now < resume:
                self._retry_at = max(self._retry_at, resume)
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
            timeout = min(timeout, max(0.05, self._stop_deadline - self._mono()))
        return timeout

    def _deliver(self, outbox: Outbox, rows: Sequence[ClaimedRow]) -> bool:
        """Send ``rows`` (leased by us); True when the drain may go on with the next batch."""
        assert self._sender is not None
        sender = self._sender
        current = list(rows)
        first = True

        def attempt() -> SendResult:
            nonlocal current, first
            if not first:  # the claim has just set the lease: renew only before a retry
                owned = set(
                    outbox.renew(
                        self._owner, [r.row_id for r in current], self._settings.lease_seconds
                    )
                )
                current = [r for r in current if r.row_id in owned]
                if not current:
                    return _NOTHING_SENT
            first = False
            return sender.send_events([r.body for r in current], timeout=self._request_timeout())

        try:
            result = self._retrying(attempt)
        except Exception:
            outbox.release(self._owner, [r.row_id for r in current])
            raise
        return self._apply(outbox, current, result)

    def _apply(self, outbox: Outbox, rows: Sequence[ClaimedRow], result: SendResult) -> bool:
        plan = plan_batch(rows, result)
        self._settle(outbox, rows, plan)
        if result.kind in (SendKind.OK, SendKind.DRY_RUN) and result is not _NOTHING_SENT:
            self._pause_seconds = FIRST_PAUSE_SECONDS
            self._log.reset("send")
            self._log.reset("refused")
        if plan.next is Next.CONTINUE:
            return True
        if plan.next is Next.RESEND:
            return self._deliver(outbox, plan.resend)
        if plan.next is Next.SPLIT:
            middle = len(plan.resend) // 2
            first, second = plan.resend[:middle], plan.resend[middle:]
            if not self._deliver(outbox, first):
                outbox.release(self._owner, [r.row_id for r in second])
                return False
            return self._deliver(outbox, second)
        outbox.release(self._owner, plan.release)
        if plan.next is Next.RETRY_LATER:
            if plan.shared_pause:
                until = self._clock() + plan.shared_pause
                outbox.set_not_before(until, plan.shared_pause)
                self._shared_seen = (until, self._mono() + plan.shared_pause)
            text = (
                f"server unavailable ({result.detail or result.status}); "
                f"{len(rows)} events kept for the next cycle"
            )
            self._report("send", TelemetryError(text), text)
            self._retry_at = self._mono() + self._settings.submit_interval
            return False
        # PAUSE (401/403 or another refusal): keep every event, log once per pause.
        pause = min(self._pause_seconds, self._settings.submit_interval)
        self._pause_seconds = min(self._pause_seconds * 2, self._settings.submit_interval)
        self._paused_until = self._mono() + pause
        text = (
            f"server refused the batch ({result.detail or f'HTTP {result.status}'}); "
            f"{len(rows)} events kept, sending paused for {pause:.0f} s"
        )
        self._report("refused", TelemetryError(text), text)
        return False

    def _settle(self, outbox: Outbox, rows: Sequence[ClaimedRow], plan: Plan) -> None:
        """Write the fate of every row the plan decided (ack, dead-letter, back off)."""
        if plan.delivered or plan.duplicates or plan.dry_run:
            outbox.ack(plan.delivered, plan.duplicates, dry_run=plan.dry_run)
            self._stats.add("delivered", len(plan.delivered))
            self._stats.add("duplicates", len(plan.duplicates))
            self._stats.add("dry_run_skipped", len(plan.dry_run))
            logger.info(
                "sent a batch of %d events: %d accepted, %d duplicates, %d rejected",
                len(rows),
                len(plan.delivered),
                len(plan.duplicates),
                len(plan.dead),
            )
        if plan.dead:
            moved = outbox.dead_letter(plan.dead)
            self._stats.add("dead_lettered", moved)
            self._log.warning(
                "dead-letter",
                "%d events moved to the dead-letter table: %s",
                moved,
                plan.dead[0][1],
            )
        if plan.unanswered:
            unanswered = set(plan.unanswered)
            attempts = max(r.attempts for r in rows if r.row_id in unanswered)
            backoff = verdict_backoff(attempts)
            outbox.release(self._owner, plan.unanswered, retry_at=self._clock() + backoff)
            self._wake_at = min(self._wake_at, self._mono() + backoff)
            self._log.warning(
                "missing-verdicts",
                "server reply had no verdict for %d events; they are sent again in %.0f s",
                len(plan.unanswered),
                backoff,
            )
        if plan.unknown_ids:
            self._log.warning(
                "unknown-ids",
                "server reply named %d event ids that were not in the batch; ignored",
                plan.unknown_ids,
            )

    def _before_retry(self, result: SendResult, seconds: float) -> None:
        self._stats.add("retried")
        self._safe(lambda: self._outbox().bump("retried"))
        logger.info(
            "batch not delivered (%s); retrying in %.1f s", result.detail or result.status, seconds
        )
