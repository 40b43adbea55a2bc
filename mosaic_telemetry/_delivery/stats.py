"""The counters of one client, and the typed records delivery reports with.

``Stats`` is thread-safe (one lock, renewed in a forked child); ``snapshot()`` gives a frozen
:class:`StatsSnapshot`, which ``TelemetryClient.stats()`` turns into its documented dict.
"""

from __future__ import annotations

import threading

import attrs

from .. import _forksafe

__all__ = ["COUNTERS", "FlushResult", "Stats", "StatsSnapshot", "WorkerSettings"]

#: Every counter of a client, in the order ``stats()`` shows them.
COUNTERS = (
    "tracked",
    "delivered",
    "duplicates",
    "retried",
    "dead_lettered",
    "evicted",
    "dry_run_skipped",
    "handed_off",
    "lost",
    "invalid",
)


@attrs.frozen
class FlushResult:
    """What a ``flush()`` achieved: events delivered meanwhile and events still pending."""

    delivered: int
    remaining: int
    dead_lettered: int = 0
    timed_out: bool = False
    #: Events a dry-run client took out of its outbox without sending them.
    dry_run: int = 0


@attrs.frozen(kw_only=True)
class StatsSnapshot:
    """A copy of a client's counters at one moment, plus its last background error."""

    tracked: int = 0
    delivered: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0
    evicted: int = 0
    #: Events a dry-run client took out of its outbox without sending them.
    dry_run_skipped: int = 0
    handed_off: int = 0
    lost: int = 0
    invalid: int = 0
    last_error: str | None = None
    last_error_at: float | None = None


@attrs.frozen
class WorkerSettings:
    """The numbers a worker runs by (already validated by the client)."""

    batch_size: int
    submit_interval: float
    request_timeout: float
    max_retries: int
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    #: A stored shared pause further ahead than this is a clock step, not a pause: ignored.
    max_shared_pause: float = 3600.0

    @property
    def lease_seconds(self) -> float:
        """A lease outlives one request (renewed before each retry): about 2x the timeout."""
        return 2.0 * self.request_timeout + 5.0


class Stats:
    """Thread-safe counters of one client (``stats()`` adds the outbox's figures)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        _forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

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
            self._last_error, self._last_error_at = text, at

    def snapshot(self) -> StatsSnapshot:
        """A copy of every counter plus the last error."""
        with self._lock:
            return StatsSnapshot(
                **self._counts, last_error=self._last_error, last_error_at=self._last_error_at
            )
