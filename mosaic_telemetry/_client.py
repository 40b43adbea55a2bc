"""``TelemetryClient``: the one object users hold.

``track()`` writes the event to the SQLite outbox before it returns and never raises; one
worker thread per client and process sends what the outbox holds. The async methods are thin
``asyncio.to_thread`` wrappers over the sync ones. Forked children (gunicorn, multiprocessing)
reopen their connection and start their own worker on first use; interpreter exit stops
every running client within its ``shutdown_timeout_seconds``.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import attrs

from ._config import Settings, TelemetryConfig
from ._delivery.ports import Sender
from ._delivery.seam import Transport
from ._delivery.stats import FlushResult, Stats, WorkerSettings
from ._enums import Complexity, Harness, Provider, RepoSizeCategory, TaskType
from ._exceptions import OutboxError
from ._log import RateLimitedLogger, logger
from ._models import PredictionQuery, PredictionResponse, TaskCompletionEvent
from ._predictions import PredictionCache
from ._prefetch import PredictionPrefetcher
from ._store import SqliteOutbox
from ._task import TaskRecorder, TaskSupport, tracked
from ._task_rules import TaskSpec
from ._wire.events import event_to_json

if TYPE_CHECKING:
    from ._delivery.api import TelemetryApi
    from ._delivery.worker import Worker

__all__ = ["TelemetryClient"]

_CLIENTS: weakref.WeakSet[TelemetryClient] = weakref.WeakSet()
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
        self._clock = clock
        self._monotonic = monotonic
        self._transport = transport
        self._log = RateLimitedLogger(clock=monotonic)  # its interval is a wait, too
        self._lock = threading.RLock()
        self._stats = Stats()
        self._enabled = bool(config.enabled)
        problems = config.validate()
        if transport is not None and not callable(getattr(transport, "handle_request", None)):
            problems.append("transport: must have a handle_request(request) method")
        self._problems = problems if self._enabled else []
        self._settings = Settings.usable(config, problems)  # later edits of config don't leak in
        self._batch_size = self._settings.batch_size
        self._max_queue = self._settings.max_queue_size
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
            self._outbox = self._open_outbox()
        self._predictions = PredictionCache(
            self._settings.prediction_cache_ttl_seconds,
            clock=clock,
            store=self._outbox if isinstance(self._outbox, SqliteOutbox) else None,
            log=self._log,
        )
        fetch = self._enabled and not config.dry_run
        self._tasks = TaskSupport(
            host=self,
            instance_id=config.instance_id,
            enabled=self._enabled,
            count=lambda name: self._stats.add(name),
            log=self._log,
            monotonic=monotonic,
            prefetcher=PredictionPrefetcher(
                self.refresh_predictions_sync, monotonic=monotonic, log=self._log
            )
            if fetch
            else None,
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
        _CLIENTS.add(self)

    def __repr__(self) -> str:
        return (
            f"TelemetryClient(server_url={self._config.server_url!r}, running={self._running}, "
            f"enabled={self._enabled}, dry_run={self._config.dry_run})"
        )

    # --- outbox -------------------------------------------------------------------------------
    def _open_outbox(self) -> SqliteOutbox:
        config = self._config
        path = config.resolved_outbox_path()
        try:
            outbox = SqliteOutbox(
                path,
                durability=self._settings.durability,
                max_pending=self._max_queue,
                server_url=str(config.server_url),
                dry_run=bool(config.dry_run),
                clock=self._clock,
            )
        except OutboxError as exc:
            return self._memory_fallback(exc)
        if outbox.server_url and outbox.server_url != config.server_url:
            self._problems.append(
                f"outbox_path: {path} was written for {outbox.server_url!r}, not "
                f"{config.server_url!r}; its events are not sent to another server "
                "(choose another outbox_path, or inspect it with `mosaic-telemetry outbox`)"
            )
        return outbox

    def _memory_fallback(self, exc: BaseException) -> SqliteOutbox:
        logger.error(
            "telemetry outbox unusable (%s); keeping events in memory only (not durable, at "
            "most %d)",
            exc,
            self._max_queue,
        )
        self._stats.error(f"outbox unusable: {exc}", self._clock())
        return SqliteOutbox.in_memory(max_pending=self._max_queue, clock=self._clock)

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
                # Imported and built here, on the caller's thread: no import ever runs on the
                # worker thread (a fork during an import leaves a half-initialised module).
                from ._delivery.worker import Worker

                config = self._config
                settings = self._settings
                self._worker = Worker(
                    outbox=self._current_outbox,
                    sender=self._make_sender(),
                    stats=self._stats,
                    settings=WorkerSettings(
                        batch_size=self._batch_size,
                        submit_interval=settings.submit_interval_seconds,
                        request_timeout=settings.request_timeout_seconds,
                        max_retries=settings.max_retries,
                    ),
                    on_error=config.on_error if callable(config.on_error) else None,
                    clock=self._clock,
                    monotonic=self._monotonic,
                    log=self._log,
                )
                self._worker.start()
            return self._worker

    def _make_api(self, api_key: str) -> TelemetryApi:
        from ._delivery.api import TelemetryApi
        from ._delivery.transport import RequestsTransport

        return TelemetryApi(
            str(self._config.server_url),
            api_key,
            transport=self._transport or RequestsTransport(),
            timeout=self._settings.request_timeout_seconds,
            clock=self._clock,
        )

    def _make_sender(self) -> Sender | None:
        """The sender of the worker; None (events kept, nothing sent) when it cannot be built."""
        if self._config.dry_run:
            from ._delivery.api import DryRunApi

            return DryRunApi()
        if self._problems:
            return None
        try:
            return self._make_api(str(self._config.api_key))
        except Exception as exc:  # e.g. an unusable URL: keep events, never die
            text = f"telemetry sending disabled: {exc!r}"
            self._stats.error(text, self._clock())
            self._log.error("sender", "%s", text)
            on_error = self._config.on_error
            if callable(on_error):
                try:
                    on_error(exc)
                except Exception:
                    logger.debug("on_error callback raised", exc_info=True)
            return None

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
        self._worker = None
        self._unsent = 0
        self._prediction_lock = threading.Lock()
        self._prediction_api = None

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
            text = event_to_json(event)
            self._store(str(event.event_id), text)
        except Exception as exc:
            self._stats.add("invalid")
            self._log.error("track", "telemetry event not tracked: %r", exc)

    def _store(self, event_id: str, text: str) -> None:
        # On disk before this returns: the outbox, or this process's spool when the outbox is
        # locked or failing; memory only if neither can be written (counted by the outbox).
        inserted, evicted = self._current_outbox().add(event_id, text)
        if evicted:
            self._stats.add("evicted", evicted)
        if inserted:
            self._stats.add("tracked")
            self._unsent += 1
            if self._unsent >= self._batch_size:
                self._unsent = 0
                self._wake()

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
                self._prediction_api = self._make_api("")  # public: no key is sent
            return self._prediction_api.post_predictions(queries)


async def _to_thread(func: Callable[..., object], *args: object) -> None:
    """Run ``func`` in the default executor (asyncio is imported on first async use only)."""
    import asyncio

    await asyncio.to_thread(func, *args)


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        client._after_fork()


def _stop_all_at_exit() -> None:
    # Every worker is asked first, so N clients share one shutdown_timeout instead of taking
    # N of them one after the other (no threads: they cannot start during finalization).
    for client in list(_CLIENTS):
        worker = client._worker
        if client.is_running and worker is not None and client._pid == os.getpid():
            worker.stop(client._shutdown_timeout, wait=False)
    for client in list(_CLIENTS):
        if client.is_running:
            client.stop()
        elif client._pid == os.getpid():
            client._absorb()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_stop_all_at_exit)
