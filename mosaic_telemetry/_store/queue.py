"""The events queue: insert, evict, acknowledge and dead-letter rows, keeping the counts true.

Functions of a connection, run inside the caller's write transaction (the outbox owns the
connections and the locks). Every ``DELETE FROM events`` goes through :func:`delete_events`,
which keeps ``removed_count`` / ``removed_max_id`` in meta (see :mod:`.schema`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from .leases import ids_json
from .schema import SQL_ADD, SQL_PENDING

__all__ = [
    "ack",
    "bump",
    "check_counter_name",
    "dead_letter",
    "delete_events",
    "evict",
    "evict_dead",
    "insert_many",
    "insert_rows",
]

SQL_NOTE_REMOVED: Final = (
    "UPDATE meta SET value = CASE key WHEN 'removed_count' THEN CAST(value AS INTEGER) + ?"
    " ELSE max(CAST(value AS INTEGER), ?) END WHERE key IN ('removed_count', 'removed_max_id')"
)
#: The oldest rows first, never a leased one: a row in flight is delivered (or released) by
#: its sender; deleting it would count it twice, evicted and then delivered.
SQL_EVICT: Final = (
    "DELETE FROM events WHERE id IN"
    " (SELECT id FROM events WHERE lease_owner IS NULL ORDER BY id LIMIT ?) RETURNING id"
)
SQL_EVICT_DEAD: Final = (
    "DELETE FROM dead WHERE id IN (SELECT id FROM dead ORDER BY id LIMIT"
    " max(0, (SELECT COUNT(*) FROM dead) - ?))"
)
SQL_BUMP: Final = (
    "INSERT INTO meta (key, value) VALUES ('counter_' || ?, ?) ON CONFLICT (key) DO UPDATE"
    " SET value = CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER)"
)
SQL_DELETE_IDS: Final = (
    "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?)) RETURNING id"
)
SQL_DEAD_TWIN: Final = (
    "SELECT 1 FROM dead WHERE event_id = (SELECT event_id FROM events WHERE id = ?)"
)
SQL_TO_DEAD: Final = (
    "INSERT OR REPLACE INTO dead"
    " (event_id, body, enqueued_at, dead_at, attempts, reason, http_status)"
    " SELECT event_id, body, enqueued_at, ?, attempts, ?, ? FROM events WHERE id = ?"
)


def check_counter_name(name: str) -> str:
    """``name`` if it is a valid counter name (letters, digits, ``_``); ValueError otherwise."""
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"counter name must be letters, digits and '_': {name!r}")
    return name


def bump(conn: sqlite3.Connection, name: str, n: int) -> None:
    """Add ``n`` to the persisted counter ``name`` (nothing for 0)."""
    if n:
        conn.execute(SQL_BUMP, (name, int(n)))


def delete_events(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> int:
    """Run ``sql`` (a ``DELETE FROM events ... RETURNING id``) and note what it removed."""
    ids = [row[0] for row in conn.execute(sql, params).fetchall()]
    if ids:
        conn.execute(SQL_NOTE_REMOVED, (len(ids), max(ids)))
    return len(ids)


def insert_many(conn: sqlite3.Connection, items: Sequence[tuple[str, str]], now: float) -> int:
    """Insert events (existing event ids are skipped); returns how many were new."""
    return insert_rows(conn, [(eid, body, now) for eid, body in items])


def insert_rows(conn: sqlite3.Connection, rows: Sequence[tuple[str, str, float]]) -> int:
    """Insert ``(event_id, body, enqueued_at)`` rows (existing event ids are skipped)."""
    return max(conn.executemany(SQL_ADD, rows).rowcount, 0)


def evict(conn: sqlite3.Connection, max_pending: int) -> int:
    """Delete the oldest unleased rows beyond ``max_pending``, counted; returns how many."""
    excess = int(conn.execute(SQL_PENDING).fetchone()[0]) - max_pending
    if excess <= 0:
        return 0
    evicted = delete_events(conn, SQL_EVICT, (excess,))
    bump(conn, "evicted", evicted)
    return evicted


def evict_dead(conn: sqlite3.Connection, max_dead: int) -> int:
    """Delete the oldest dead rows beyond ``max_dead``, counted as evicted; returns how many."""
    evicted = int(conn.execute(SQL_EVICT_DEAD, (max_dead,)).rowcount)
    bump(conn, "evicted", evicted)
    return evicted


def ack(
    conn: sqlite3.Connection,
    delivered: Sequence[int],
    duplicates: Sequence[int],
    dry_run: Sequence[int] = (),
) -> None:
    """Delete rows the server has (or a dry run did not send), whatever their lease, and
    count each kind."""
    for name, ids in (("delivered", delivered), ("duplicates", duplicates), ("dry_run", dry_run)):
        if ids:
            bump(conn, name, delete_events(conn, SQL_DELETE_IDS, (ids_json(ids),)))


def dead_letter(
    conn: sqlite3.Connection, rows: Sequence[tuple[int, str, int | None]], now: float
) -> int:
    """Move rows to ``dead`` with their reason and HTTP status; returns how many moved.

    An event already dead (tracked twice, rejected twice) keeps one dead row: the older one is
    replaced and counted as a duplicate, so the ledger still balances.
    """
    moved = twins = 0
    for row_id, reason, status in rows:
        twin = conn.execute(SQL_DEAD_TWIN, (int(row_id),)).fetchone() is not None
        if conn.execute(SQL_TO_DEAD, (now, reason, status, int(row_id))).rowcount:
            moved += delete_events(conn, SQL_DELETE_IDS, (f"[{int(row_id)}]",))
            twins += twin
    bump(conn, "dead", moved)
    bump(conn, "duplicates", twins)
    return moved
