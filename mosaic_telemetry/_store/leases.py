"""Leases: who may send a row right now, and finding leases whose owner is gone.

The worker ``claim()``-s a batch under a lease (owner token, host, pid, expiry), sends it,
then acks, dead-letters or releases it. A lease that is never acked expires; a lease whose
process died on this host is cleared at once (:func:`orphaned_tokens`).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from .schema import MAX_ROW_DELAY_SECONDS

__all__ = [
    "ClaimedRow",
    "LeaseOwner",
    "claim",
    "clear_leases",
    "host_leases",
    "ids_json",
    "orphaned_tokens",
    "pid_is_alive",
    "release",
    "renew",
]

#: (pid, token) of every LeaseOwner built in this process; see orphaned_tokens.
_OWN_TOKENS: set[tuple[int, str]] = set()

SQL_CLAIM: Final = (
    "UPDATE events SET lease_owner = ?, lease_host = ?, lease_pid = ?, lease_expires_at = ?,"
    " attempts = attempts + 1"
    " WHERE id IN (SELECT id FROM events"
    "  WHERE (lease_owner IS NULL OR lease_expires_at <= ?)"
    "   AND (next_attempt_at <= ? OR next_attempt_at > ?)"
    "  ORDER BY id LIMIT ?)"
    " RETURNING id, event_id, body, attempts"
)
SQL_RENEW: Final = (
    "UPDATE events SET lease_expires_at = ?"
    " WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))"
    " RETURNING id"
)
SQL_RELEASE: Final = (
    "UPDATE events SET lease_owner = NULL, lease_host = NULL, lease_pid = NULL,"
    " lease_expires_at = NULL, next_attempt_at = COALESCE(?, next_attempt_at)"
    " WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))"
)
SQL_HOST_LEASES: Final = (
    "SELECT DISTINCT lease_owner, lease_pid FROM events"
    " WHERE lease_owner IS NOT NULL AND lease_host = ?"
)
SQL_CLEAR: Final = (
    "UPDATE events SET lease_owner = NULL, lease_host = NULL, lease_pid = NULL,"
    " lease_expires_at = NULL"
    " WHERE lease_host = ? AND lease_owner IN (SELECT value FROM json_each(?))"
)


@attrs.frozen
class LeaseOwner:
    """Who holds a lease: a random token per sender, plus where it runs (host, pid)."""

    token: str
    host: str
    pid: int

    def __attrs_post_init__(self) -> None:
        _OWN_TOKENS.add((os.getpid(), self.token))

    @classmethod
    def for_this_process(cls) -> LeaseOwner:
        """A fresh owner for a sender in the current process."""
        return cls(token=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid())


@attrs.frozen
class ClaimedRow:
    """One row leased by ``claim()``; ``attempts`` includes this claim."""

    row_id: int
    event_id: str
    body: str
    attempts: int


def pid_is_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0; EPERM means it does)."""
    if pid <= 0:
        return False  # kill(0 or -n, 0) would address process groups, not one process
    if os.name == "nt":  # os.kill(pid, 0) would terminate it on Windows; let the lease expire
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def orphaned_tokens(
    leases: Sequence[tuple[str, int | None]], is_alive: Callable[[int], bool]
) -> list[str]:
    """Tokens among this host's leases whose process is gone.

    A lease with our own pid but a token this process never built belongs to an earlier
    process that had the same pid (pid 1 in a container restarted after a crash).
    """
    me = os.getpid()
    orphans = []
    for token, pid in leases:
        if pid is None:
            orphans.append(token)
        elif pid == me:
            if (me, token) not in _OWN_TOKENS:
                orphans.append(token)
        elif not is_alive(pid):
            orphans.append(token)
    return orphans


def ids_json(ids: Sequence[int]) -> str:
    """Row ids as a JSON list for ``json_each(?)``."""
    return json.dumps([int(i) for i in ids])


def claim(
    conn: sqlite3.Connection, owner: LeaseOwner, limit: int, expires: float, now: float
) -> list[ClaimedRow]:
    """Inside a write transaction: lease up to ``limit`` eligible rows, oldest first.

    A row is due once ``next_attempt_at`` has passed, or when it lies more than
    ``MAX_ROW_DELAY_SECONDS`` ahead (the wall clock was stepped back since it was released).
    """
    horizon = now + MAX_ROW_DELAY_SECONDS
    params = (owner.token, owner.host, owner.pid, expires, now, now, horizon, limit)
    rows = conn.execute(SQL_CLAIM, params).fetchall()
    return sorted((ClaimedRow(*row) for row in rows), key=lambda r: r.row_id)


def renew(
    conn: sqlite3.Connection, owner: LeaseOwner, row_ids: Sequence[int], expires: float
) -> list[int]:
    """Extend the leases ``owner`` still holds; returns those row ids."""
    rows = conn.execute(SQL_RENEW, (expires, owner.token, ids_json(row_ids))).fetchall()
    return sorted(r[0] for r in rows)


def release(
    conn: sqlite3.Connection, owner: LeaseOwner, row_ids: Sequence[int], retry_at: float | None
) -> None:
    """Clear the leases ``owner`` still holds; with ``retry_at``, not claimable before it."""
    conn.execute(SQL_RELEASE, (retry_at, owner.token, ids_json(row_ids)))


def host_leases(conn: sqlite3.Connection, host: str) -> list[tuple[str, int | None]]:
    """The distinct (token, pid) of leases held on ``host``."""
    return [(str(t), p) for t, p in conn.execute(SQL_HOST_LEASES, (host,)).fetchall()]


def clear_leases(conn: sqlite3.Connection, host: str, tokens: Sequence[str]) -> int:
    """Clear every lease of ``tokens`` on ``host``; returns how many rows."""
    return int(conn.execute(SQL_CLEAR, (host, json.dumps(list(tokens)))).rowcount)
