"""The bounded in-memory outbox: the stand-in when the outbox file cannot be used at all.

Same methods as :class:`~mosaic_telemetry._outbox.SqliteOutbox`, so the worker never knows
which one it drains; nothing here survives the process.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import socket
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ._outbox import (
    _PROTECTED_META,
    COUNTER_NAMES,
    SCHEMA_VERSION,
    ClaimedRow,
    LeaseOwner,
    _check_max_pending,
    _check_name,
    _eviction_log,
    _orphaned_tokens,
    pid_is_alive,
)

__all__ = ["MemoryOutbox"]

_MEMORY_OUTBOXES: weakref.WeakSet[MemoryOutbox] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for outbox in list(_MEMORY_OUTBOXES):
        outbox._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@attrs.define
class _MemoryRow:
    id: int
    event_id: str
    body: str
    enqueued_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    lease_owner: str | None = None
    lease_host: str | None = None
    lease_pid: int | None = None
    lease_expires_at: float | None = None

    def eligible(self, now: float) -> bool:
        leased = self.lease_owner is not None and (self.lease_expires_at or 0.0) > now
        return not leased and self.next_attempt_at <= now

    def clear_lease(self) -> None:
        self.lease_owner = self.lease_host = self.lease_pid = self.lease_expires_at = None


class MemoryOutbox:
    """The bounded in-memory fallback: same methods as :class:`SqliteOutbox`, nothing durable.

    ``max_pending`` bounds both the pending and the dead rows. A forked child starts empty:
    the rows it inherits belong to the parent, which sends them.
    """

    durable = False
    path: pathlib.Path | None = None

    def __init__(
        self,
        *,
        max_pending: int = 1000,
        server_url: str = "",
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.server_url = server_url
        self._max_pending = _check_max_pending(max_pending)
        self._clock = clock
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._dead_ids = itertools.count(1)
        self._events: dict[int, _MemoryRow] = {}  # insertion order == id order
        self._by_event_id: dict[str, int] = {}
        self._dead: dict[str, dict[str, Any]] = {}
        self._counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self._meta: dict[str, str] = {
            "schema_version": SCHEMA_VERSION,
            "server_url": server_url,
            "mode": "dry_run" if dry_run else "real",
            "created_at": repr(float(clock())),
            "not_before": "0",
        }
        self._predictions: dict[str, tuple[str, float]] = {}
        _MEMORY_OUTBOXES.add(self)

    def __repr__(self) -> str:
        return f"MemoryOutbox(pending={len(self._events)})"

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._events.clear()
        self._by_event_id.clear()
        self._dead.clear()
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)

    def add(self, event_id: str, body: str) -> tuple[bool, int]:
        """Insert one event; ``(inserted, evicted)``."""
        inserted, evicted = self.add_many([(event_id, body)])
        return bool(inserted), evicted

    def add_many(self, items: Sequence[tuple[str, str]]) -> tuple[int, int]:
        """Insert events, evicting the oldest beyond ``max_pending``; ``(inserted, evicted)``."""
        now = self._clock()
        inserted = 0
        with self._lock:
            for event_id, body in items:
                if event_id in self._by_event_id:
                    continue
                row_id = next(self._ids)
                self._events[row_id] = _MemoryRow(row_id, event_id, body, now)
                self._by_event_id[event_id] = row_id
                inserted += 1
            evicted = 0
            while len(self._events) > self._max_pending:
                oldest = next(iter(self._events))
                self._by_event_id.pop(self._events.pop(oldest).event_id, None)
                evicted += 1
            self._counters["evicted"] += evicted
        if evicted:
            _eviction_log.warning(
                f"evicted:memory:{id(self)}",
                "in-memory outbox is full (max_pending=%d): evicted the %d oldest event(s)",
                self._max_pending,
                evicted,
            )
        return inserted, evicted

    def claim(self, owner: LeaseOwner, limit: int, lease_seconds: float) -> list[ClaimedRow]:
        """Lease up to ``limit`` eligible rows, oldest first, to ``owner``."""
        now = self._clock()
        claimed: list[ClaimedRow] = []
        with self._lock:
            for row in self._events.values():
                if len(claimed) >= limit:
                    break
                if row.eligible(now):
                    row.lease_owner, row.lease_host, row.lease_pid = (
                        owner.token,
                        owner.host,
                        owner.pid,
                    )
                    row.lease_expires_at = now + lease_seconds
                    row.attempts += 1
                    claimed.append(ClaimedRow(row.id, row.event_id, row.body, row.attempts))
        return claimed

    def _owned(self, owner: LeaseOwner, row_ids: Sequence[int]) -> list[_MemoryRow]:
        rows = (self._events.get(int(i)) for i in row_ids)
        return [r for r in rows if r is not None and r.lease_owner == owner.token]

    def renew(self, owner: LeaseOwner, row_ids: Sequence[int], lease_seconds: float) -> list[int]:
        """Extend the leases ``owner`` still holds; returns those row ids."""
        expires = self._clock() + lease_seconds
        with self._lock:
            rows = self._owned(owner, row_ids)
            for row in rows:
                row.lease_expires_at = expires
            return sorted({r.id for r in rows})

    def release(
        self, owner: LeaseOwner, row_ids: Sequence[int], *, retry_at: float | None = None
    ) -> None:
        """Clear the leases ``owner`` still holds; with ``retry_at``, not claimable before it."""
        with self._lock:
            for row in self._owned(owner, row_ids):
                row.clear_lease()
                if retry_at is not None:
                    row.next_attempt_at = retry_at

    def _delete(self, row_ids: Sequence[int]) -> int:
        removed = 0
        for row_id in dict.fromkeys(int(i) for i in row_ids):
            row = self._events.pop(row_id, None)
            if row is not None:
                del self._by_event_id[row.event_id]
                removed += 1
        return removed

    def ack(
        self,
        delivered: Sequence[int],
        duplicates: Sequence[int] = (),
        *,
        dry_run: Sequence[int] = (),
    ) -> None:
        """Delete rows the server has (or a dry run did not send) and count them."""
        with self._lock:
            self._counters["delivered"] += self._delete(delivered)
            self._counters["duplicates"] += self._delete(duplicates)
            self._counters["dry_run"] += self._delete(dry_run)

    def dead_letter(self, rows: Sequence[tuple[int, str, int | None]]) -> int:
        """Move rows to the dead list with their reason and HTTP status; returns how many."""
        now = self._clock()
        moved = 0
        with self._lock:
            for row_id, reason, status in rows:
                row = self._events.pop(int(row_id), None)
                if row is None:
                    continue
                del self._by_event_id[row.event_id]
                self._dead.pop(row.event_id, None)
                self._dead[row.event_id] = {
                    "id": next(self._dead_ids),
                    "event_id": row.event_id,
                    "body": row.body,
                    "enqueued_at": row.enqueued_at,
                    "dead_at": now,
                    "attempts": row.attempts,
                    "reason": reason,
                    "http_status": status,
                }
                moved += 1
            while len(self._dead) > self._max_pending:
                del self._dead[next(iter(self._dead))]
                self._counters["evicted"] += 1
            self._counters["dead"] += moved
        return moved

    def reclaim_orphaned_leases(self, is_alive: Callable[[int], bool] | None = None) -> int:
        """Clear leases held by dead processes of this host; returns how many rows."""
        host = socket.gethostname()
        with self._lock:
            leased = [r for r in self._events.values() if r.lease_owner and r.lease_host == host]
        leases = list({(r.lease_owner or "", r.lease_pid) for r in leased})
        orphans = set(_orphaned_tokens(leases, is_alive or pid_is_alive))
        cleared = 0
        with self._lock:
            for row in self._events.values():
                if row.lease_owner in orphans and row.lease_host == host:
                    row.clear_lease()
                    cleared += 1
        return cleared

    def pending_count(self) -> int:
        """Rows waiting for delivery, leased or not."""
        return len(self._events)

    def leased_count(self) -> int:
        """Rows under a lease that has not expired."""
        now = self._clock()
        with self._lock:
            return sum(
                1
                for r in self._events.values()
                if r.lease_owner and (r.lease_expires_at or 0) > now
            )

    def dead_count(self) -> int:
        """Rows in the dead list."""
        return len(self._dead)

    def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest waiting row was added, or None when there is none."""
        with self._lock:
            oldest = next(iter(self._events.values()), None)
        return None if oldest is None else max(0.0, self._clock() - oldest.enqueued_at)

    def counters(self) -> dict[str, int]:
        """The counters (at least :data:`COUNTER_NAMES`)."""
        with self._lock:
            return dict(self._counters)

    def bump(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        _check_name(name)
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + n

    def get_not_before(self) -> float:
        """The pause: no sending before this epoch second (0 when none)."""
        return float(self._meta.get("not_before", "0"))

    def set_not_before(self, when: float) -> None:
        """Pause sending until ``when``."""
        self._meta["not_before"] = repr(float(when))

    def get_meta(self, key: str) -> str | None:
        """One meta value."""
        if key == "pending_count":
            return str(len(self._events))
        return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        """Set one meta value (the identity keys cannot be changed)."""
        if key in _PROTECTED_META:
            raise ValueError(f"meta key {key!r} is managed by the outbox itself")
        self._meta[key] = value

    def checkpoint(self) -> None:
        """Nothing to checkpoint in memory."""

    def ensure_file(self) -> int:
        """No file to lose: nothing to recreate."""
        return 0

    def save_prediction(self, key: str, body: str, fetched_at: float) -> None:
        """Store one prediction reply under its query key."""
        with self._lock:
            self._predictions[key] = (body, fetched_at)

    def load_predictions(self) -> list[tuple[str, str, float]]:
        """Every stored prediction as ``(key, body, fetched_at)``."""
        with self._lock:
            return [(k, b, f) for k, (b, f) in sorted(self._predictions.items())]

    def list_rows(self, *, dead: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
        """Pending (or dead) rows oldest first, as dicts keyed like the SQLite columns."""
        with self._lock:
            if dead:
                rows = [dict(r) for r in self._dead.values()]
            else:
                rows = [attrs.asdict(r) for r in self._events.values()]
        return rows if limit is None or limit < 0 else rows[:limit]

    def get_row(self, event_id: str) -> dict[str, Any] | None:
        """One event by id, pending or dead, with ``state`` set to "pending" or "dead"."""
        with self._lock:
            row_id = self._by_event_id.get(event_id)
            if row_id is not None:
                return {**attrs.asdict(self._events[row_id]), "state": "pending"}
            dead = self._dead.get(event_id)
            return None if dead is None else {**dead, "state": "dead"}

    def requeue(self, event_ids: Sequence[str] | None = None) -> int:
        """Move dead rows (all, or these event ids) back to pending with attempts reset."""
        with self._lock:
            wanted = (
                list(self._dead)
                if event_ids is None
                else [e for e in dict.fromkeys(event_ids) if e in self._dead]
            )
            for event_id in wanted:
                dead = self._dead.pop(event_id)
                if event_id not in self._by_event_id:
                    row_id = next(self._ids)
                    self._events[row_id] = _MemoryRow(
                        row_id, event_id, dead["body"], dead["enqueued_at"]
                    )
                    self._by_event_id[event_id] = row_id
        return len(wanted)

    def purge(self, *, dead_only: bool) -> int:
        """Forget every dead row (and every pending row unless ``dead_only``)."""
        with self._lock:
            removed = len(self._dead)
            self._dead.clear()
            if not dead_only:
                removed += len(self._events)
                self._events.clear()
                self._by_event_id.clear()
        return removed

    def close(self) -> None:
        """Nothing to close; the rows are lost with the process."""
