"""``TelemetryClient``: the one object users hold.

``track()`` writes the event to the SQLite outbox before it returns and never raises; one
worker thread per client and process sends what the outbox holds. The async methods are thin
``asyncio.to_thread`` wrappers over the sync ones. Forked children (gunicorn, multiprocessing)
reopen their connection and start their own worker on first use; interpreter exit stops
every running client within its ``shutdown_timeout_seconds``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import attrs

from . import _processes
from ._assembly import Assembly
from ._config import Settings, TelemetryConfig
from ._delivery.seam import Transport
from ._delivery.stats import FlushResult, Stats
from ._enums import Complexity, Harness, Provider, RepoSizeCategory, TaskType
from ._exceptions import OutboxError
from ._log import RateLimitedLogger, logger
from ._models import PredictionQuery, PredictionResponse, TaskCompletionEvent
from ._secrets import redact
from ._store import SqliteOutbox
from ._task import TaskRecorder, tracked
from ._task_rules import TaskSpec
from ._wire.events import event_id_and_json

if TYPE_CHECKING:
    from ._delivery.api import TelemetryApi
    from ._delivery.worker import Worker

__all__ = ["TelemetryClient"]

P = ParamSpec("P")
R = TypeVar("R")


class TelemetryClient:
    """Tracks events durably and delivers them to the Mosaic Telemetry API v1."""

    def __init__(
        self,
        config: TelemetryConfig,
        *,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``transport`` replaces the HTTP transport (``testing.MockTransport`` in tests);
        ``clock`` (wall time) and ``monotonic`` (every wait) can be injected for tests."""
        self._config = config
        self._log = RateLimitedLogger(clock=monotonic)  # its interval is a wait, too
        self._lock = threading.RLock()
        self._stats = Stats()
        self._enabled = bool(config.enabled)
        problems = config.validate()
        if transport is not None and not callable(getattr(transport, "handle_request", None)):
            problems.append("transport: must have a handle_request(request) method")
        self._problems = problems if self._enabled else []
        self._settings = Settings.usable(config, problems)  # later edits of config don't leak in
        self._parts = Assembly(
            config,
            self._settings,
            transport=transport,
            stats=self._stats,
            log=self._log,
            clock=clock,
            monotonic=monotonic,
        )
        self._batch_size = self._settings.batch_size
        self._shutdown_timeout = self._settings.shutdown_timeout_seconds
        self._outbox: SqliteOutbox | None = None
        self._worker: Worker | None = None
        self._running = False
        self._stopped = False  # stop() was called: a forked child stays stopped too
        self._unsent = 0
        self._pid = os.getpid()
        self._prediction_lock = threading.Lock()
        self._prediction_api: TelemetryApi | None = None
        if self._enabled:
            self._outbox = self._parts.open_outbox(self._problems)
        self._predictions = self._parts.prediction_cache(self._outbox)
        self._tasks = self._parts.task_support(
            self, refresh=self.refresh_predictions_sync, count=lambda name: self._stats.add(name)
        )
        if not self._enabled:
            return
        self._predictions.load()
        if self._problems:
            logger.error(
                "telemetry configuration has problems; events are kept in the outbox and not "
                "sent until they are fixed: %s",
                "; ".join(self._problems),
            )
        _processes.register(self)

    def __repr__(self) -> str:
        url = redact(str(self._config.server_url))  # a key pasted into the URL is never shown
        return (
            f"TelemetryClient(server_url={url!r}, running={self._running}, "
            f"enabled={self._enabled}, dry_run={self._config.dry_run})"
        )

    # --- outbox -------------------------------------------------------------------------------
    def _current_outbox(self) -> SqliteOutbox:
        assert self._outbox is not None
        return self._outbox

    # --- lifecycle ----------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        """True between start() and stop() (in a forked child: until its first use, too)."""
        return self._running

    def start(self) -> None:
        """Start the background worker (no-op when disabled or already running)."""
        with self._lock:
            self._check_fork()
            if not self._enabled or self._running:
                return
            self._running = True
            self._stopped = False
            self._ensure_worker()

    def _ensure_worker(self) -> Worker:
        with self._lock:
            if self._worker is None:
                self._worker = self._parts.worker(self._current_outbox, self._problems)
            return self._worker

    def stop(self) -> None:
        """Send what is pending within ``shutdown_timeout_seconds``, then stop the worker.

        What is not delivered by then stays in the outbox for the next start.
        """
        with self._lock:
            self._check_fork()
            worker, self._worker = self._worker, None
            self._running = False
            self._stopped = True
        if worker is None:
            self._absorb()  # never started: no worker moves what track() spooled
        elif not worker.stop(self._shutdown_timeout):
            logger.warning(
                "telemetry worker still busy after %.1f s; undelivered events stay in the outbox",
                self._shutdown_timeout,
            )

    def __enter__(self) -> TelemetryClient:
        """``start()``; leaving the block runs ``stop()``."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def start_async(self) -> None:
        """``start()`` without blocking the event loop."""
        await _to_thread(self.start)

    async def stop_async(self) -> None:
        """``stop()`` without blocking the event loop."""
        await _to_thread(self.stop)

    async def __aenter__(self) -> TelemetryClient:
        """``await start_async()``; leaving the block awaits ``stop_async()``."""
        await self.start_async()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_async()

    # --- fork -----------------------------------------------------------------------------------
    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()

    def _after_fork(self) -> None:
        """In a forked child: fresh locks and queues, no inherited worker; start on first use.

        The child sends even when the parent never started the client: a preloading parent
        (gunicorn ``--preload``) builds it and forks, and its workers must deliver on their own.
        """
        self._pid = os.getpid()
        self._running = self._enabled and not self._stopped
        self._lock = threading.RLock()
        self._stats = Stats()
        self._parts.stats = self._stats
        self._worker = None
        self._unsent = 0
        self._prediction_lock = threading.Lock()
        self._prediction_api = None

    def _ask_to_stop(self) -> None:
        """At exit, first of all: ask this process's worker for its final drain (no wait)."""
        worker = self._worker
        if self._running and worker is not None and self._pid == os.getpid():
            worker.stop(self._shutdown_timeout, wait=False)

    def _stop_at_exit(self) -> None:
        """At exit, after every client was asked: wait for the drain, or move the spool in."""
        if self._running:
            self.stop()
        elif self._pid == os.getpid():
            self._absorb()

    # --- tracking -------------------------------------------------------------------------------
    def track(self, event: TaskCompletionEvent) -> None:
        """Write ``event`` to the outbox and return; never raises, never waits on the network."""
        try:
            if not self._enabled:
                return
            if self._pid != os.getpid() or (self._running and self._worker is None):
                with self._lock:
                    self._check_fork()
                    if self._running:
                        self._ensure_worker()
            if not isinstance(event, TaskCompletionEvent):
                raise TypeError(f"track() takes a TaskCompletionEvent, got {type(event).__name__}")
            event_id, text = event_id_and_json(event)  # the id text made once
            outbox = self._outbox
            assert outbox is not None  # enabled
            # On disk before this returns: the outbox, or this process's spool when the outbox
            # is locked or failing; memory only if neither can be written (counted there).
            inserted, evicted = outbox.add(event_id, text)
            if evicted:
                self._stats.add("evicted", evicted)
            if inserted:
                self._stats.add("tracked")
                self._unsent += 1
                if self._unsent >= self._batch_size:
                    self._unsent = 0
                    self._wake()
        except Exception as exc:
            self._stats.add("invalid")
            self._log.error("track", "telemetry event not tracked: %r", exc)

    def _absorb(self) -> None:
        """No worker: move what this process spooled into the outbox (best effort; what
        stays in the spool is adopted by the next process that opens the outbox)."""
        if self._outbox is None:
            return
        try:
            self._outbox.absorb()
        except OutboxError as exc:
            self._log.error("outbox-write", "telemetry spool not moved into the outbox: %s", exc)

    def _wake(self) -> None:
        if self._running:
            self._ensure_worker().wake()

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Send what is pending now; wait up to ``timeout`` seconds (None: until the drain ends)."""
        before = self._stats.snapshot()
        finished = True
        with self._lock:
            self._check_fork()
            running = self._enabled and self._running
        if running:
            finished = self._ensure_worker().flush(timeout)
        elif self._enabled:
            logger.warning("flush() on a client that is not started: nothing was sent")
        after = self._stats.snapshot()
        return FlushResult(
            delivered=after.delivered - before.delivered,
            remaining=self.queue_size,
            dead_lettered=after.dead_lettered - before.dead_lettered,
            timed_out=not finished,
            dry_run=after.dry_run_skipped - before.dry_run_skipped,
        )

    @property
    def queue_size(self) -> int:
        """Events waiting to be sent (in the outbox, plus any this process spooled)."""
        if self._outbox is None:
            return 0
        try:
            return self._outbox.pending_count() + self._outbox.spooled_count()
        except OutboxError:
            return self._outbox.spooled_count()

    def stats(self) -> dict[str, Any]:
        """Counters of this client plus the outbox's pending figures; never raises."""
        result: dict[str, Any] = attrs.asdict(self._stats.snapshot())
        outbox = self._outbox
        result.update(
            pending=self.queue_size,
            held_in_memory=outbox.held_in_memory() if outbox is not None else 0,
            oldest_pending_age_seconds=None,
            dead=0,
            durable=bool(getattr(outbox, "durable", False)),
            outbox_path=str(getattr(outbox, "path", None) or "") or None,
            running=self._running,
            enabled=self._enabled,
            dry_run=bool(self._config.dry_run),
            config_problems=list(self._problems),
        )
        if outbox is not None:
            intake = outbox.intake_counts()
            result["handed_off"], result["lost"] = intake.spooled, intake.lost
            try:
                result["oldest_pending_age_seconds"] = outbox.oldest_pending_age()
                result["dead"] = outbox.dead_count()
                result["ledger"] = outbox.ledger().to_dict()
            except OutboxError as exc:
                result["last_error"] = str(exc)
        return result

    # --- tasks --------------------------------------------------------------------------------
    def task(
        self,
        task_type: TaskType | str,
        *,
        model: str,
        provider: Provider | str,
        harness: Harness | str,
        complexity: Complexity | str,
        language: str | None = None,
        repo_size: RepoSizeCategory | str | None = None,
    ) -> TaskRecorder:
        """A ``with`` / ``async with`` block that times one task and tracks it when it ends.

        See docs/agents.md: the outcome, duration and estimates are filled in, the block's
        exception propagates unchanged, and telemetry never raises out of the block.
        """
        spec = TaskSpec(
            task_type=task_type,
            model=model,
            provider=provider,
            harness=harness,
            complexity=complexity,
            language=language,
            repo_size=repo_size,
        )
        return TaskRecorder(self._tasks, spec)

    def tracked(
        self,
        task_type: TaskType | str,
        *,
        model: str,
        provider: Provider | str,
        harness: Harness | str,
        complexity: Complexity | str,
        language: str | None = None,
        repo_size: RepoSizeCategory | str | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """A decorator: each call of the function (sync or async) runs in ``client.task(...)``.

        Inside, ``TaskRecorder.current()`` is that call's recorder.
        """
        spec = TaskSpec(
            task_type=task_type,
            model=model,
            provider=provider,
            harness=harness,
            complexity=complexity,
            language=language,
            repo_size=repo_size,
        )
        return tracked(self._tasks, spec)

    # --- predictions ----------------------------------------------------------------------------
    def get_prediction(self, query: PredictionQuery) -> PredictionResponse | None:
        """The cached prediction for ``query``, or None (absent or older than the TTL)."""
        return self._predictions.get(query)

    def refresh_predictions_sync(self, queries: Sequence[PredictionQuery]) -> int:
        """Fetch predictions for ``queries`` into the cache; trouble is logged, never raised.

        Returns how many answers the server gave and the cache now holds fresh (0 when the
        server could not be asked or did not answer, disabled and dry-run included).
        """
        try:
            if not self._enabled or self._config.dry_run:
                return 0
            return self._predictions.refresh(list(queries), self._post_predictions)
        except Exception as exc:
            self._log.error("predictions", "prediction refresh failed: %r", exc)
            return 0

    async def refresh_predictions(self, queries: Sequence[PredictionQuery]) -> int:
        """``refresh_predictions_sync`` in the default executor: the event loop never blocks."""
        import asyncio

        return await asyncio.to_thread(self.refresh_predictions_sync, queries)

    def _post_predictions(self, queries: Sequence[PredictionQuery]) -> list[Any]:
        with self._prediction_lock:
            if self._prediction_api is None:
                self._prediction_api = self._parts.api("")  # public: no key is sent
            return self._prediction_api.post_predictions(queries)


async def _to_thread(func: Callable[..., object], *args: object) -> None:
    """Run ``func`` in the default executor (asyncio is imported on first async use only)."""
    import asyncio

    await asyncio.to_thread(func, *args)
