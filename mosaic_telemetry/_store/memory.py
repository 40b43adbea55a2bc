"""``MemoryDatabase``: the outbox schema on an in-memory SQLite database, the memory fallback.

Used when the outbox file cannot be opened at all: the same :class:`~.outbox.SqliteOutbox`
runs over it, so there is one implementation of every operation and nothing can drift between
a durable and a non-durable outbox. Nothing here survives the process.

Every connection to ``:memory:`` is a database of its own, so there is exactly one connection,
shared by every thread under one lock. A forked child gets a new, empty database: the rows it
inherited belong to the parent, which sends them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Mapping

from .._exceptions import OutboxError
from . import queue
from .connections import CONNECTIONS, transaction
from .errors import map_error
from .schema import create_schema

__all__ = ["MemoryDatabase"]


class MemoryDatabase:
    """One in-memory database used under one lock."""

    durable = False
    path = None
    label = "in-memory outbox"

    def __init__(self, defaults: Mapping[str, str]) -> None:
        self._defaults = dict(defaults)
        self.server_url = self._defaults.get("server_url", "")
        self._closed = False
        self._lock = threading.RLock()
        self._conn = self._new()

    def _new(self) -> sqlite3.Connection:
        with CONNECTIONS.gate():
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            with transaction(conn):
                create_schema(conn, self.label, self._defaults)
        # Dropped with this database, the connection is closed and freed inside the registry's
        # gate, never by a garbage collection that may run while another thread forks.
        weakref.finalize(self, CONNECTIONS.close_later, conn).atexit = False
        return conn

    @contextlib.contextmanager
    def read(self, op: str) -> Iterator[sqlite3.Connection]:
        """The one connection, under the lock and inside the fork gate; sqlite3 errors mapped."""
        with CONNECTIONS.gate(), self._lock:
            if self._closed:
                raise OutboxError(f"{self.label} is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise map_error(exc, op, self.label) from exc

    def snapshot(self, op: str) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """The one connection under the lock: nobody else can change it meanwhile."""
        return self.read(op)

    @contextlib.contextmanager
    def write(self, op: str) -> Iterator[sqlite3.Connection]:
        """The one connection inside ``BEGIN IMMEDIATE``, under the lock."""
        with self.read(op) as conn, transaction(conn):
            yield conn

    def add(self, row: tuple[str, str, float], max_pending: int) -> tuple[bool, int]:
        """Insert one row and evict beyond ``max_pending``; ``(inserted, evicted)``."""
        with self.write("add") as conn:
            inserted = queue.insert_many(conn, [(row[0], row[1])], row[2])
            evicted = queue.evict(conn, max_pending) if inserted else 0
        return bool(inserted), evicted

    def checkpoint(self) -> None:
        """No WAL in memory."""

    def ensure_file(self) -> int:
        """No file to lose: nothing to recreate."""
        return 0

    def after_fork_in_child(self) -> None:
        """A new lock and a new, empty database."""
        self._lock = threading.RLock()
        self._conn = self._new()

    def close(self) -> None:
        """Forget the rows; later calls raise OutboxError."""
        with CONNECTIONS.gate(), self._lock:
            self._closed = True
            self._conn.close()
