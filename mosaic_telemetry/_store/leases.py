"""Leases: who may send a row right now, and deciding whether a lease's owner still lives.

The worker ``claim()``-s a batch of unleased rows under a lease (owner token, host, pid,
expiry), sends it, then acks, dead-letters or releases it. Whether a lease still stands is
decided by its owner's liveness (:func:`judge`), never first by a wall clock:

1. a token of this process is never probed (the outbox bounds its own holds with its
   monotonic clock instead);
2. on this host, the owner's presence lock decides (:func:`~.presence.probe`): held, the lease
   stands whatever any clock says; free, it is cleared at once;
3. no lock file (an older SDK, a foreign owner): the pid decides: gone (or ours, but with a
   token this process never made: an earlier process with the same pid), cleared at once;
4. the last resort, a lease of another host or of a live pid without a lock file: it is
   cleared once ``lease_expires_at`` has passed by the wall clock.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from .schema import MAX_ROW_DELAY_SECONDS

__all__ = [
    "ClaimedRow",
    "LeaseOwner",
    "Verdicts",
    "claim",
    "clear_leases",
    "clear_tokens",
    "holders",
    "ids_json",
    "judge",
    "own_tokens",
    "pid_is_alive",
    "release",
    "release_token",
    "renew",
    "this_host",
]

#: (pid, token) of every LeaseOwner built in this process; see orphaned_tokens.
_OWN_TOKENS: set[tuple[int, str]] = set()

SQL_CLAIM: Final = (
    "UPDATE events SET lease_owner = ?, lease_host = ?, lease_pid = ?, lease_expires_at = ?,"
    " attempts = attempts + 1"
    " WHERE id IN (SELECT id FROM events"
    "  WHERE lease_owner IS NULL AND (next_attempt_at <= ? OR next_attempt_at > ?)"
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
SQL_HOLDERS: Final = (
    "SELECT DISTINCT lease_owner, lease_host, lease_pid FROM events WHERE lease_owner IS NOT NULL"
)
_SQL_CLEAR: Final = (
    "UPDATE events SET lease_owner = NULL, lease_host = NULL, lease_pid = NULL,"
    " lease_expires_at = NULL WHERE lease_owner IN (SELECT value FROM json_each(?))"
)
SQL_CLEAR_TOKENS: Final = _SQL_CLEAR
SQL_CLEAR_EXPIRED: Final = _SQL_CLEAR + " AND lease_expires_at <= ?"


def this_host() -> str:
    """This host's name, as leases record it."""
    import socket  # 8 ms to import: not on the way of import mosaic_telemetry's client

    return socket.gethostname()


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
        return cls(token=uuid.uuid4().hex, host=this_host(), pid=os.getpid())


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


def own_tokens() -> frozenset[str]:
    """Tokens of every LeaseOwner built in this process."""
    me = os.getpid()
    return frozenset(token for pid, token in _OWN_TOKENS if pid == me)


@attrs.frozen
class Verdicts:
    """What :func:`judge` decided: leases to clear now, and leases to clear once expired."""

    dead: list[str]
    expirable: list[str]


def judge(
    leases: Sequence[tuple[str, str | None, int | None]],
    *,
    host: str,
    own: frozenset[str],
    probe: Callable[[str], bool | None],
    is_alive: Callable[[int], bool],
) -> Verdicts:
    """Decide each ``(token, host, pid)`` lease by the rules of this module's docstring."""
    me = os.getpid()
    dead: list[str] = []
    expirable: list[str] = []
    for token, lease_host, pid in leases:
        if lease_host != host:
            expirable.append(token)
        elif token in own and pid == me:
            continue
        else:
            alive = probe(token)
            if alive is True:
                continue
            if alive is False or pid is None or pid == me or not is_alive(pid):
                dead.append(token)
            else:
                expirable.append(token)
    return Verdicts(dead=dead, expirable=expirable)


def ids_json(ids: Sequence[int]) -> str:
    """Row ids as a JSON list for ``json_each(?)``."""
    return json.dumps([int(i) for i in ids])


def claim(
    conn: sqlite3.Connection, owner: LeaseOwner, limit: int, expires: float, now: float
) -> list[ClaimedRow]:
    """Inside a write transaction: lease up to ``limit`` unleased rows that are due.

    A row is due once ``next_attempt_at`` has passed, or when it lies more than
    ``MAX_ROW_DELAY_SECONDS`` ahead (the wall clock was stepped back since it was released).
    """
    horizon = now + MAX_ROW_DELAY_SECONDS
    params = (owner.token, owner.host, owner.pid, expires, now, horizon, limit)
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


def release_token(conn: sqlite3.Connection, token: str, row_ids: Sequence[int]) -> int:
    """Clear the leases ``token`` still holds on ``row_ids``; returns how many rows."""
    params = (None, token, ids_json(row_ids))
    return int(conn.execute(SQL_RELEASE, params).rowcount)


def holders(conn: sqlite3.Connection) -> list[tuple[str, str | None, int | None]]:
    """The distinct ``(token, host, pid)`` of every lease in the file."""
    return [(str(t), h, p) for t, h, p in conn.execute(SQL_HOLDERS).fetchall()]


def clear_tokens(conn: sqlite3.Connection, tokens: Sequence[str]) -> int:
    """Clear every lease of ``tokens``; returns how many rows."""
    if not tokens:
        return 0
    return int(conn.execute(SQL_CLEAR_TOKENS, (json.dumps(list(tokens)),)).rowcount)


def clear_leases(conn: sqlite3.Connection, verdicts: Verdicts, now: float) -> int:
    """Apply :func:`judge`'s verdicts (the wall clock only for the expirable ones)."""
    cleared = clear_tokens(conn, verdicts.dead)
    if verdicts.expirable:
        params = (json.dumps(verdicts.expirable), now)
        cleared += int(conn.execute(SQL_CLEAR_EXPIRED, params).rowcount)
    return cleared
