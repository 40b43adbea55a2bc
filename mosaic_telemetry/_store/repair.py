"""Repairs a person asks for: requeue dead letters, purge rows, and recreating a lost file.

Functions of a connection, run inside the caller's write transaction, except
:func:`copy_out` / :func:`copy_in`, which move every row of a file that was deleted or replaced
while open into its new file (the outbox holds its write lock around both).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

import attrs

from .queue import delete_events
from .schema import SQL_ADD

__all__ = ["FileContents", "copy_in", "copy_out", "purge", "requeue"]

# Requeued rows go back through SQL_ADD one by one, so they get ids like any new event.
SQL_REQUEUE_ALL: Final = "SELECT event_id, body, COALESCE(enqueued_at, ?) FROM dead ORDER BY id"
SQL_REQUEUE_SOME: Final = (
    "SELECT event_id, body, COALESCE(enqueued_at, ?) FROM dead"
    " WHERE event_id IN (SELECT value FROM json_each(?)) ORDER BY id"
)


def requeue(conn: sqlite3.Connection, event_ids: Sequence[str] | None, now: float) -> int:
    """Move dead rows (all, or these event ids) back to pending with attempts reset."""
    if event_ids is None:
        conn.executemany(SQL_ADD, conn.execute(SQL_REQUEUE_ALL, (now,)).fetchall())
        return int(conn.execute("DELETE FROM dead").rowcount)
    ids = json.dumps(list(event_ids))
    conn.executemany(SQL_ADD, conn.execute(SQL_REQUEUE_SOME, (now, ids)).fetchall())
    return int(
        conn.execute(
            "DELETE FROM dead WHERE event_id IN (SELECT value FROM json_each(?))", (ids,)
        ).rowcount
    )


def purge(conn: sqlite3.Connection, *, dead_only: bool) -> int:
    """Delete every dead row (and every pending row unless ``dead_only``); returns count."""
    removed = int(conn.execute("DELETE FROM dead").rowcount)
    if not dead_only:
        removed += delete_events(conn, "DELETE FROM events RETURNING id", ())
    return removed


@attrs.frozen
class FileContents:
    """What moves from a lost file into its replacement: rows and the shared meta values."""

    pending: list[tuple[Any, ...]]
    dead: list[tuple[Any, ...]]
    meta: list[tuple[Any, ...]]


def copy_out(conn: sqlite3.Connection) -> FileContents:
    """Read every pending and dead row and the counters of a (lost) file."""
    return FileContents(
        pending=conn.execute(
            "SELECT event_id, body, enqueued_at FROM events ORDER BY id"
        ).fetchall(),
        dead=conn.execute(
            "SELECT event_id, body, enqueued_at, dead_at, attempts, reason, http_status"
            " FROM dead ORDER BY id"
        ).fetchall(),
        meta=conn.execute(
            "SELECT key, value FROM meta"
            " WHERE key = 'not_before' OR key LIKE 'counter\\_%' ESCAPE '\\'"
        ).fetchall(),
    )


def copy_in(conn: sqlite3.Connection, contents: FileContents) -> None:
    """Inside a write transaction of the new file: insert what :func:`copy_out` read."""
    conn.executemany(SQL_ADD, contents.pending)
    conn.executemany(
        "INSERT OR IGNORE INTO dead (event_id, body, enqueued_at, dead_at, attempts,"
        " reason, http_status) VALUES (?, ?, ?, ?, ?, ?, ?)",
        contents.dead,
    )
    conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", contents.meta)
