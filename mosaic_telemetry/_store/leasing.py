"""Leasing for one outbox instance: its lease owner, its own holds, and reclaiming.

The rules live in :mod:`.leases`; this class applies them to one database and remembers the
rows this instance leased, each bounded by the monotonic clock (a sender that never came
back releases its rows after its lease time, whatever the wall clock says).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
from collections.abc import Callable, Sequence
from typing import Protocol

from . import leases, presence
from .leases import ClaimedRow, LeaseOwner

__all__ = ["Leasing"]


class _Writer(Protocol):
    def read(self, op: str) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
    def write(self, op: str) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...


class Leasing:
    """Claims, renewals, releases and reclaiming for one outbox instance."""

    def __init__(
        self,
        db: _Writer,
        *,
        presence_of: Callable[[], presence.Presence | None],
        spool_dir: pathlib.Path | None,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self._db = db
        self._presence_of = presence_of
        self._spool_dir = spool_dir
        self._clock = clock
        self._monotonic = monotonic
        #: Rows this instance leased: row id -> (token, monotonic deadline).
        self._holds: dict[int, tuple[str, float]] = {}
        self._owner: LeaseOwner | None = None

    def owner(self) -> LeaseOwner:
        """The presence token (with host and pid) this outbox's sender leases rows as."""
        mine = self._presence_of()
        token = None
        if mine is not None:
            with contextlib.suppress(OSError):
                mine.acquire()
            token = mine.token
        owner = self._owner
        if owner is None or owner.pid != os.getpid() or (token and owner.token != token):
            if token is None:
                owner = LeaseOwner.for_this_process()
            else:
                owner = LeaseOwner(token=token, host=leases.this_host(), pid=os.getpid())
            self._owner = owner
        return owner

    def hold(self, token: str, row_ids: Sequence[int], lease_seconds: float) -> None:
        """Remember rows leased (or renewed) by this instance, until the lease time passes."""
        deadline = self._monotonic() + lease_seconds
        for row_id in row_ids:
            self._holds[row_id] = (token, deadline)

    def drop(self, row_ids: Sequence[int]) -> None:
        """Forget rows that were acked, dead-lettered or released."""
        for row_id in row_ids:
            self._holds.pop(int(row_id), None)

    def claim(self, owner: LeaseOwner, limit: int, lease_seconds: float) -> list[ClaimedRow]:
        """Lease up to ``limit`` unleased rows that are due, oldest first."""
        now = self._clock()
        with self._db.write("claim") as conn:
            rows = leases.claim(conn, owner, limit, now + lease_seconds, now)
        self.hold(owner.token, [r.row_id for r in rows], lease_seconds)
        return rows

    def renew(self, owner: LeaseOwner, row_ids: Sequence[int], lease_seconds: float) -> list[int]:
        """Extend the leases ``owner`` still holds; returns those row ids."""
        with self._db.write("renew") as conn:
            renewed = leases.renew(conn, owner, row_ids, self._clock() + lease_seconds)
        self.hold(owner.token, renewed, lease_seconds)
        return renewed

    def release(self, owner: LeaseOwner, row_ids: Sequence[int], retry_at: float | None) -> None:
        """Clear the leases ``owner`` still holds."""
        with self._db.write("release") as conn:
            leases.release(conn, owner, row_ids, retry_at)
        self.drop(row_ids)

    def _probe(self, token: str) -> bool | None:
        return None if self._spool_dir is None else presence.probe(self._spool_dir, token)

    def reclaim(self, is_alive: Callable[[int], bool] | None) -> int:
        """Release overdue own holds, then clear leases whose owner is gone; how many rows."""
        cleared = self._release_overdue()
        with self._db.read("reclaim_orphaned_leases") as conn:
            held = leases.holders(conn)
        if not held:
            return cleared
        verdicts = leases.judge(
            held,
            host=leases.this_host(),
            own=leases.own_tokens() | presence.own_tokens(),
            probe=self._probe,
            is_alive=is_alive or leases.pid_is_alive,
        )
        if not verdicts.dead and not verdicts.expirable:
            return cleared
        with self._db.write("reclaim_orphaned_leases") as conn:
            return cleared + leases.clear_leases(conn, verdicts, self._clock())

    def _release_overdue(self) -> int:
        now = self._monotonic()
        overdue: dict[str, list[int]] = {}
        for row_id, (token, deadline) in list(self._holds.items()):
            if deadline <= now:
                overdue.setdefault(token, []).append(row_id)
        released = 0
        for token, row_ids in overdue.items():
            with self._db.write("reclaim_orphaned_leases") as conn:
                released += leases.release_token(conn, token, row_ids)
            self.drop(row_ids)
        return released

    def after_fork_in_child(self) -> None:
        """The parent's holds and owner are the parent's."""
        self._holds = {}
        self._owner = None
