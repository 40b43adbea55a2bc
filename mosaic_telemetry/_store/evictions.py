"""Eviction warnings that tell the truth: at most one line per interval, each carrying the
number of events evicted since the previous line (a plain rate limiter hid them: one line said
"evicted the 1 oldest" for 8,518).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

from .._log import RateLimitedLogger

__all__ = ["EvictionLog"]

INTERVAL_SECONDS: Final = 60.0


class EvictionLog:
    """Counts evictions of one outbox and reports them, with true counts, at most once a minute."""

    def __init__(
        self,
        label: str,
        max_pending: int,
        *,
        interval: float = INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._label = label
        self._max_pending = max_pending
        self._interval = interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._unreported: dict[str, int] = {}
        self._next_at = 0.0
        # Interval 0: never holds a line back (we do that here); it only guards against a log
        # handler that calls back into the SDK.
        self._out = RateLimitedLogger(0.0)

    def add(self, evicted: int, what: str = "pending") -> None:
        """Count ``evicted`` events of kind ``what``; log them all if the interval has passed."""
        if evicted <= 0:
            return
        with self._lock:
            self._unreported[what] = self._unreported.get(what, 0) + evicted
            now = self._monotonic()
            if now < self._next_at:
                return
            self._next_at = now + self._interval
            counts, self._unreported = self._unreported, {}
        self._emit(counts)

    def flush(self) -> None:
        """Log what was counted since the last line (at close)."""
        with self._lock:
            counts, self._unreported = self._unreported, {}
        if counts:
            self._emit(counts)

    def _emit(self, counts: dict[str, int]) -> None:
        detail = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
        self._out.warning(
            "evicted",
            "outbox %s is full (max_queue_size=%d): evicted %d event(s) since the last report "
            "(%s; oldest first, never one in flight)",
            self._label,
            self._max_pending,
            sum(counts.values()),
            detail,
        )
