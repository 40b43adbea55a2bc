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

from .queue import bump, delete_events
from .schema import SQL_ADD

__all__ = ["FileContents", "copy_in", "copy_out", "purge", "requeue"]

_EVENT_COLUMNS: Final = ", ".join(
    (
        "id",
        "event_id",
        "body",
        "enqueued_at",
        "attempts",
        "next_attempt_at",
        "lease_owner",
        "lease_host",
        "lease_pid",
        "lease_expires_at",
    )
)
_EVENT_PLACEHOLDERS: Final = ", ".join("?" * len(_EVENT_COLUMNS.split(", ")))
# Requeued rows go back through SQL_ADD one by one, so they get ids like any new event.
SQL_REQUEUE_ALL: Final = "SELECT event_id, body, COALESCE(enqueued_at, ?) FROM dead ORDER BY id"
SQL_REQUEUE_SOME: Final = (
    "SELECT event_id, body, COALESCE(enqueued_at, ?) FROM dead"
    " WHERE event_id IN (SELECT value FROM json_each(?)) ORDER BY id"
)


def requeue(conn: sqlite3.Connection, event_ids: Sequence[str] | None, now: float) -> int:
    """Move dead rows (all, or these event ids) back to pending with attempts reset.

    Counted for the ledger: ``requeued`` (each such row is inserted again, with a new id), and
    a dead row whose event is already pending again as one of the ``duplicates``.
    """
    if event_ids is None:
        rows = conn.execute(SQL_REQUEUE_ALL, (now,)).fetchall()
        removed = int(conn.execute("DELETE FROM dead").rowcount)
    else:
        ids = json.dumps(list(event_ids))
        rows = conn.execute(SQL_REQUEUE_SOME, (now, ids)).fetchall()
        removed = int(
            conn.execute(
                "DELETE FROM dead WHERE event_id IN (SELECT value FROM json_each(?))", (ids,)
            ).rowcount
        )
    inserted = max(conn.executemany(SQL_ADD, rows).rowcount, 0)
    bump(conn, "requeued", inserted)
    bump(conn, "duplicates", removed - inserted)
    return removed


def purge(conn: sqlite3.Connection, *, dead_only: bool) -> int:
    """Delete every dead row (and every pending row unless ``dead_only``); returns count."""
    removed = int(conn.execute("DELETE FROM dead").rowcount)
    if not dead_only:
        removed += delete_events(conn, "DELETE FROM events RETURNING id", ())
    bump(conn, "purged", removed)
    return removed


@attrs.frozen
class FileContents:
    """What moves from a lost file into its replacement: rows and the shared meta values."""

    pending: list[tuple[Any, ...]]
    dead: list[tuple[Any, ...]]
    meta: list[tuple[Any, ...]]


def copy_out(conn: sqlite3.Connection) -> FileContents:
    """Read every pending and dead row, the counters and the id bookkeeping of a (lost) file."""
    return FileContents(
        pending=conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY id"  # noqa: S608 - constant
        ).fetchall(),
        dead=conn.execute(
            "SELECT event_id, body, enqueued_at, dead_at, attempts, reason, http_status"
            " FROM dead ORDER BY id"
        ).fetchall(),
        meta=conn.execute(
            "SELECT key, value FROM meta WHERE key IN ('not_before', 'removed_count',"
            " 'removed_max_id') OR key LIKE 'counter\\_%' ESCAPE '\\'"
        ).fetchall(),
    )


def copy_in(conn: sqlite3.Connection, contents: FileContents, *, fresh: bool = True) -> None:
    """Inside a write transaction of the new file: insert what :func:`copy_out` read.

    Into a ``fresh`` (new, empty) file, rows keep their ids and the meta keeps removed_count /
    removed_max_id and the counters, so ids are never reused and the ledger (tracked = highest
    id - requeued = every outcome) still holds. Into an outbox that already has rows (one of
    ours was put at the path), they are merged by ``event_id`` under new ids, as new events
    of that file (its own ledger stays whole; the lost file's history goes with it).
    """
    if not fresh:
        conn.executemany(SQL_ADD, [(row[1], row[2], row[3]) for row in contents.pending])
        conn.executemany(
            "INSERT OR IGNORE INTO dead (event_id, body, enqueued_at, dead_at, attempts,"
            " reason, http_status) VALUES (?, ?, ?, ?, ?, ?, ?)",
            contents.dead,
        )
        return
    conn.executemany(
        f"INSERT OR IGNORE INTO events ({_EVENT_COLUMNS})"  # noqa: S608 - constant fragments
        f" VALUES ({_EVENT_PLACEHOLDERS})",
        contents.pending,
    )
    conn.executemany(
        "INSERT OR IGNORE INTO dead (event_id, body, enqueued_at, dead_at, attempts,"
        " reason, http_status) VALUES (?, ?, ?, ?, ?, ?, ?)",
        contents.dead,
    )
    conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", contents.meta)
