"""Fetching a missing prediction in the background, so the next task of its kind has it.

A task block must never wait on the network, so when the cache has no answer for its query
it only asks this prefetcher, which fetches on one short-lived daemon thread through the
client's ``refresh_predictions_sync`` (which logs and never raises). Requests are
deduplicated while in flight and paused after each attempt, so a server that is down or has
no data is not asked by every task.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

from ._log import RateLimitedLogger
from ._models import PredictionQuery

__all__ = ["PredictionPrefetcher"]


class PredictionPrefetcher:
    """Fetches missing predictions on one short-lived daemon thread, each query once at a time.

    A query is not asked again within ``retry_interval`` seconds of its last attempt, so a
    server that is down or has no answer is not asked by every task. A forked child starts
    with an empty queue (the parent's thread does not exist there).
    """

    def __init__(
        self,
        refresh: Callable[[Sequence[PredictionQuery]], object],
        *,
        monotonic: Callable[[], float],
        log: RateLimitedLogger,
        retry_interval: float = 60.0,
    ) -> None:
        self._refresh = refresh
        self._monotonic = monotonic
        self._log = log
        self._retry_interval = retry_interval
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queued: list[PredictionQuery] = []
        self._busy: set[PredictionQuery] = set()  # queued or being fetched
        self._tried: dict[PredictionQuery, float] = {}
        self._thread: threading.Thread | None = None

    def request(self, query: PredictionQuery) -> None:
        """Fetch ``query`` in the background unless it is in flight or was tried just now."""
        if self._pid != os.getpid():
            self._reset()
        now = self._monotonic()
        with self._lock:
            last = self._tried.get(query)
            if query in self._busy or (last is not None and now - last < self._retry_interval):
                return
            if len(self._tried) > 1000:  # bounded: forget attempts whose pause is over
                self._tried = {
                    q: t for q, t in self._tried.items() if now - t < self._retry_interval
                }
            self._busy.add(query)
            self._queued.append(query)
            if self._thread is not None:
                return  # the running thread takes it before it ends
            thread = threading.Thread(target=self._run, name="mosaic-telemetry-prefetch")
            thread.daemon = True
            try:
                thread.start()
            except RuntimeError as exc:  # interpreter shutdown: nobody needs the answer
                self._busy.clear()
                self._queued.clear()
                self._log.warning("prefetch", "prediction prefetch not started: %s", exc)
                return
            self._thread = thread

    def _run(self) -> None:
        while True:
            with self._lock:
                batch, self._queued = self._queued, []
                if not batch:
                    self._thread = None
                    self._idle.notify_all()
                    return
            try:
                self._refresh(batch)
            except Exception as exc:  # the client's refresh never raises; a replacement might
                self._log.error("prefetch", "prediction prefetch failed: %r", exc)
            finally:
                done = self._monotonic()
                with self._lock:
                    for query in batch:
                        self._busy.discard(query)
                        self._tried[query] = done

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no fetch is queued or running; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._thread is None, timeout)
