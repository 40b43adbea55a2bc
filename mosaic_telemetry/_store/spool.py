"""The spool: where ``add()`` writes when the shared outbox is locked longer than it may wait.

Each presence (:mod:`.presence`) has its own spool, ``<outbox>.spool/<token>.sqlite3``: a
small SQLite WAL file that no other live process writes, with the outbox's ``synchronous``
setting, so an event written there is as durable as one written to the outbox. The outbox
moves spooled rows into itself (:meth:`~.outbox.SqliteOutbox.absorb`, by ``event_id``, so a
row moved twice is stored once), and adopts the spools of dead presences.

Spool format (``PRAGMA user_version = 1``)::

    spooled      one row per event waiting to move into the outbox
      id           INTEGER PRIMARY KEY     order of arrival
      event_id     TEXT NOT NULL UNIQUE    the event's uuid
      body         TEXT NOT NULL           the event as JSON text
      enqueued_at  REAL NOT NULL           epoch seconds when tracked
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import threading
import weakref
from collections.abc import Sequence
from typing import Final

import attrs

from .._exceptions import OutboxError
from .connections import CONNECTIONS, close_quietly, leak, transaction
from .errors import map_error
from .files import identity, open_private, prepare_spool_dir

__all__ = [
    "SPOOL_SUFFIX",
    "SPOOL_VERSION",
    "Spool",
    "SpooledRow",
    "delete_spool_files",
    "read_spool",
    "spool_path",
]

SPOOL_SUFFIX: Final = ".sqlite3"
SPOOL_VERSION: Final = 1
SPOOL_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS spooled (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,"
    " body TEXT NOT NULL, enqueued_at REAL NOT NULL)"
)
SQL_SPOOL: Final = "INSERT OR IGNORE INTO spooled (event_id, body, enqueued_at) VALUES (?, ?, ?)"
SQL_TAKE: Final = "SELECT id, event_id, body, enqueued_at FROM spooled ORDER BY id LIMIT ?"
#: How long a spool write waits for SQLite's lock: only this process's own threads (under the
#: spool's Python lock) and an adopter of a dead spool ever take it.
BUSY_TIMEOUT_MS: Final = 5000


@attrs.frozen
class SpooledRow:
    """One spooled event."""

    row_id: int
    event_id: str
    body: str
    enqueued_at: float


def spool_path(spool_dir: pathlib.Path, token: str) -> pathlib.Path:
    """Where the spool of presence ``token`` lives."""
    return spool_dir / f"{token}{SPOOL_SUFFIX}"


def _connect(path: pathlib.Path, *, synchronous: str, create: bool) -> sqlite3.Connection:
    if create:
        open_private(path, "spool file")
    conn = sqlite3.connect(
        path.as_uri() + "?mode=rw",
        uri=True,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute(f"PRAGMA synchronous = {synchronous}").fetchall()
        conn.execute("PRAGMA journal_size_limit = 1048576").fetchall()
        conn.execute("PRAGMA wal_autocheckpoint = 100").fetchall()  # a spool stays small
        if create:
            with transaction(conn):
                conn.execute(SPOOL_DDL)
                conn.execute(f"PRAGMA user_version = {SPOOL_VERSION}")
    except BaseException:
        close_quietly([conn])
        raise
    return conn


class Spool:
    """This presence's own spool file, created on first use; thread-safe."""

    def __init__(self, path: pathlib.Path, *, synchronous: str) -> None:
        self.path = path
        self._synchronous = synchronous
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._id: tuple[int, int] | None = None
        #: Rows written here and not yet moved out (exact: only this process writes the file).
        self.count = 0

    @property
    def exists(self) -> bool:
        """Whether the file was created (by this process, since it opened)."""
        return self._conn is not None

    def add(self, rows: Sequence[tuple[str, str, float]]) -> int:
        """Write rows durably (one transaction); how many were new. OutboxError on failure."""
        with CONNECTIONS.gate(), self._lock:  # inside the fork gate, like every SQLite call
            try:
                conn = self._open()
                if len(rows) == 1:  # the hot path: one autocommit statement
                    added = max(conn.execute(SQL_SPOOL, rows[0]).rowcount, 0)
                else:
                    with transaction(conn):
                        added = max(conn.executemany(SQL_SPOOL, rows).rowcount, 0)
            except sqlite3.Error as exc:
                raise map_error(exc, "spool", self.path) from exc
            except OSError as exc:
                raise OutboxError(f"spool {self.path}: {exc.strerror or exc}") from exc
            self.count += added
            return added

    def _open(self) -> sqlite3.Connection:
        """The spool's connection, created on first use; a new file if ours was deleted.

        Rows written to a deleted file are still readable through the old connection: they
        move into the new file, so an ``rm`` of the spool directory loses nothing.
        """
        conn = self._conn
        if conn is not None and identity(self.path) == self._id:
            return conn
        kept = [] if conn is None else conn.execute(SQL_TAKE, (-1,)).fetchall()
        prepare_spool_dir(self.path.parent)
        fresh = _connect(self.path, synchronous=self._synchronous, create=True)
        if kept:
            with transaction(fresh):
                fresh.executemany(SQL_SPOOL, [tuple(r[1:]) for r in kept])
        if conn is not None:
            leak(conn)  # closing it could delete, by name, a -wal of the new file
        # Dropped with the spool, the connection is closed inside the fork gate, never by a GC.
        weakref.finalize(self, CONNECTIONS.close_later, fresh).atexit = False
        self._conn, self._id = fresh, identity(self.path)
        self.count = len(kept)
        return fresh

    def take(self, limit: int) -> list[SpooledRow]:
        """The oldest ``limit`` rows (they stay until :meth:`forget`)."""
        with CONNECTIONS.gate(), self._lock:
            if self._conn is None:
                return []
            try:
                return [SpooledRow(*r) for r in self._conn.execute(SQL_TAKE, (limit,))]
            except sqlite3.Error as exc:
                raise map_error(exc, "spool", self.path) from exc

    def forget(self, rows: Sequence[SpooledRow]) -> None:
        """Delete rows that are now in the outbox."""
        if not rows:
            return
        with CONNECTIONS.gate(), self._lock:
            if self._conn is None:
                return
            try:
                with transaction(self._conn) as conn:
                    removed = conn.execute(
                        "DELETE FROM spooled WHERE id <= ?", (max(r.row_id for r in rows),)
                    ).rowcount
            except sqlite3.Error as exc:
                raise map_error(exc, "spool", self.path) from exc
            self.count = max(0, self.count - max(removed, 0))

    def close(self, *, delete: bool) -> None:
        """Close the file; with ``delete`` (and nothing left in it) remove it and its WAL."""
        with CONNECTIONS.gate(), self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            close_quietly([conn])
            if delete and self.count == 0:
                delete_spool_files(self.path)

    def after_fork_in_child(self, path: pathlib.Path) -> None:
        """The parent's spool is the parent's: never touched (nor closed) here; a new one."""
        if self._conn is not None:
            leak(self._conn)
        self._conn = None
        self._lock = threading.Lock()
        self.path = path
        self.count = 0


def read_spool(path: pathlib.Path, *, limit: int = -1) -> list[SpooledRow]:
    """Every row of a spool file another (dead) presence wrote; OutboxError if unreadable."""
    with CONNECTIONS.gate():
        try:
            conn = _connect(path, synchronous="NORMAL", create=False)
        except sqlite3.Error as exc:
            raise map_error(exc, "adopting spool", path) from exc
        try:
            return [SpooledRow(*r) for r in conn.execute(SQL_TAKE, (limit,))]
        except sqlite3.Error as exc:
            raise map_error(exc, "adopting spool", path) from exc
        finally:
            close_quietly([conn])
            del conn


def delete_spool_files(path: pathlib.Path) -> None:
    """Remove a spool file and its ``-wal`` / ``-shm``."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
