"""What a ``TelemetryClient`` runs on, built from its config: the outbox (or the memory
fallback), the sender and the worker.

Kept apart from the client so that ``_client`` holds behaviour (track, flush, lifecycle) and this
module holds wiring. Everything a worker runs is imported and built here, on the caller's
thread: no import ever runs on the worker thread (a fork during an import leaves the child a
half-initialised module).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ._config import Settings, TelemetryConfig
from ._delivery.ports import Sender
from ._delivery.seam import Transport
from ._delivery.stats import Stats, WorkerSettings
from ._exceptions import OutboxError
from ._log import RateLimitedLogger, logger
from ._models import PredictionQuery
from ._predictions import PredictionCache
from ._prefetch import PredictionPrefetcher
from ._store import SqliteOutbox
from ._task import TaskHost, TaskSupport

if TYPE_CHECKING:
    from ._delivery.api import TelemetryApi
    from ._delivery.worker import Worker

__all__ = ["Assembly"]


class Assembly:
    """Builds the parts of one client from its config, settings and injected clocks."""

    def __init__(
        self,
        config: TelemetryConfig,
        settings: Settings,
        *,
        transport: Transport | None,
        stats: Stats,
        log: RateLimitedLogger,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._settings = settings
        self._transport = transport
        self.stats = stats
        self._log = log
        self._clock = clock
        self._monotonic = monotonic

    def open_outbox(self, problems: list[str]) -> SqliteOutbox:
        """The outbox file, or the memory fallback (logged) when it cannot be used at all.

        A file written for another server is opened but its events are not sent: that goes
        into ``problems``.
        """
        config = self._config
        path = config.resolved_outbox_path()
        try:
            outbox = SqliteOutbox(
                path,
                durability=self._settings.durability,
                max_pending=self._settings.max_queue_size,
                server_url=str(config.server_url),
                dry_run=bool(config.dry_run),
                clock=self._clock,
            )
        except OutboxError as exc:
            logger.error(
                "telemetry outbox unusable (%s); keeping events in memory only (not durable, "
                "at most %d)",
                exc,
                self._settings.max_queue_size,
            )
            self.stats.error(f"outbox unusable: {exc}", self._clock())
            return SqliteOutbox.in_memory(
                max_pending=self._settings.max_queue_size, clock=self._clock
            )
        if outbox.server_url and outbox.server_url != config.server_url:
            problems.append(
                f"outbox_path: {path} was written for {outbox.server_url!r}, not "
                f"{config.server_url!r}; its events are not sent to another server "
                "(choose another outbox_path, or inspect it with `mosaic-telemetry outbox`)"
            )
        return outbox

    def prediction_cache(self, outbox: SqliteOutbox | None) -> PredictionCache:
        """The TTL cache of predictions, kept in ``outbox`` too (a restart has them at once)."""
        return PredictionCache(
            self._settings.prediction_cache_ttl_seconds,
            clock=self._clock,
            store=outbox,
            log=self._log,
        )

    def task_support(
        self,
        host: TaskHost,
        *,
        refresh: Callable[[Sequence[PredictionQuery]], int],
        count: Callable[[str], None],
    ) -> TaskSupport:
        """What ``client.task(...)`` blocks share: the host client, counters, the prefetcher."""
        config = self._config
        enabled = bool(config.enabled)
        return TaskSupport(
            host=host,
            instance_id=config.instance_id,
            enabled=enabled,
            count=count,
            log=self._log,
            monotonic=self._monotonic,
            prefetcher=PredictionPrefetcher(refresh, monotonic=self._monotonic, log=self._log)
            if enabled and not config.dry_run
            else None,
        )

    def api(self, api_key: str) -> TelemetryApi:
        """The Telemetry API over the injected transport, or the requests one."""
        from ._delivery.api import TelemetryApi
        from ._delivery.transport import RequestsTransport

        return TelemetryApi(
            str(self._config.server_url),
            api_key,
            transport=self._transport or RequestsTransport(),
            timeout=self._settings.request_timeout_seconds,
            clock=self._clock,
        )

    def sender(self, problems: list[str]) -> Sender | None:
        """The worker's sender; None (events kept, nothing sent) when it cannot be built."""
        if self._config.dry_run:
            from ._delivery.api import DryRunApi

            return DryRunApi()
        if problems:
            return None
        try:
            return self.api(str(self._config.api_key))
        except Exception as exc:  # e.g. an unusable URL: keep events, never die
            text = f"telemetry sending disabled: {exc!r}"
            self.stats.error(text, self._clock())
            self._log.error("sender", "%s", text)
            on_error = self._config.on_error
            if callable(on_error):
                try:
                    on_error(exc)
                except Exception:
                    logger.debug("on_error callback raised", exc_info=True)
            return None

    def worker(self, outbox: Callable[[], SqliteOutbox], problems: list[str]) -> Worker:
        """A started worker draining ``outbox()`` (imported and built on this thread)."""
        from ._delivery.worker import Worker

        settings = self._settings
        on_error = self._config.on_error
        worker = Worker(
            outbox=outbox,
            sender=self.sender(problems),
            stats=self.stats,
            settings=WorkerSettings(
                batch_size=settings.batch_size,
                submit_interval=settings.submit_interval_seconds,
                request_timeout=settings.request_timeout_seconds,
                max_retries=settings.max_retries,
            ),
            on_error=on_error if callable(on_error) else None,
            clock=self._clock,
            monotonic=self._monotonic,
            log=self._log,
        )
        worker.start()
        return worker
