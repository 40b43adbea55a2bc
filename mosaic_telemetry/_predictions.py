"""The prediction cache: answers kept in memory and in the outbox database, with a TTL.

``get()`` never touches the network. ``refresh()`` asks the server (at most 50 queries a
request, each distinct query once) and keeps the old answers when the server fails. Answers
are also written to the outbox's ``predictions`` table, so a restarted agent has them at
once, still honouring the TTL through the stored fetch time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ._exceptions import OutboxError, TelemetryError
from ._log import RateLimitedLogger, logger
from ._models import PredictionQuery, PredictionResponse
from ._wire.http import MAX_PREDICTION_QUERIES
from ._wire.predictions import prediction_from_dict, prediction_to_dict, query_key

__all__ = ["PredictionCache", "PredictionStore"]


class PredictionStore(Protocol):
    """The part of the outbox the cache persists to."""

    def save_prediction(self, key: str, body: str, fetched_at: float) -> None: ...

    def load_predictions(self) -> list[tuple[str, str, float]]: ...


Poster = Callable[[Sequence[PredictionQuery]], list[Any]]


class PredictionCache:
    """Thread-safe TTL cache of PredictionResponse by PredictionQuery."""

    def __init__(
        self,
        ttl_seconds: float,
        *,
        clock: Callable[[], float],
        store: PredictionStore | None = None,
        log: RateLimitedLogger | None = None,
    ) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._store = store
        self._log = log or RateLimitedLogger()
        self._lock = threading.Lock()
        self._entries: dict[PredictionQuery, tuple[PredictionResponse, float]] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, query: PredictionQuery) -> PredictionResponse | None:
        """The cached answer, or None when absent or older than the TTL."""
        with self._lock:
            entry = self._entries.get(query)
        if entry is None or self._clock() - entry[1] > self._ttl:
            return None
        return entry[0]

    def load(self) -> int:
        """Read the answers stored by earlier runs; returns how many are still fresh."""
        if self._store is None:
            return 0
        try:
            rows = self._store.load_predictions()
        except OutboxError as exc:
            self._log.error("predictions-load", "cannot read stored predictions: %s", exc)
            return 0
        fresh = 0
        now = self._clock()
        for key, body, fetched_at in rows:
            if now - fetched_at > self._ttl:
                continue
            try:
                query = PredictionQuery(**json.loads(key))
                response = prediction_from_dict(json.loads(body))
            except (ValueError, TypeError) as exc:
                logger.debug("skipping an unreadable stored prediction: %s", exc)
                continue
            with self._lock:
                self._entries[query] = (response, fetched_at)
            fresh += 1
        return fresh

    def refresh(self, queries: Sequence[PredictionQuery], post: Poster) -> int:
        """Ask the server for ``queries`` through ``post``; returns how many answers were cached.

        Network or server trouble is logged and the previous answers are kept; nothing raises.
        """
        distinct = list(dict.fromkeys(queries))
        stored = 0
        for start in range(0, len(distinct), MAX_PREDICTION_QUERIES):
            chunk = distinct[start : start + MAX_PREDICTION_QUERIES]
            try:
                results = post(chunk)
            except TelemetryError as exc:
                self._log.error("predictions-fetch", "prediction refresh failed: %s", exc)
                continue
            if len(results) != len(chunk):
                self._log.warning(
                    "predictions-count",
                    "prediction reply has %d results for %d queries; reading those present",
                    len(results),
                    len(chunk),
                )
            stored += self._store_results(chunk, results)
        return stored

    def _store_results(self, chunk: Sequence[PredictionQuery], results: list[Any]) -> int:
        fetched_at = self._clock()
        stored = 0
        for query, raw in zip(chunk, results, strict=False):
            try:
                response = prediction_from_dict(raw)
            except ValueError as exc:
                self._log.warning(
                    "predictions-parse", "skipping an unreadable prediction result: %s", exc
                )
                continue
            with self._lock:
                self._entries[query] = (response, fetched_at)
            stored += 1
            if self._store is not None:
                try:
                    body = json.dumps(prediction_to_dict(response))
                    self._store.save_prediction(query_key(query), body, fetched_at)
                except OutboxError as exc:
                    self._log.error("predictions-save", "cannot store a prediction: %s", exc)
        return stored
