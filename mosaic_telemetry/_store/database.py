"""``FileDatabase``: one outbox file, its connections per (thread, pid), locks and recreation.

The outbox (:class:`~.outbox.SqliteOutbox`) runs its operations inside :meth:`FileDatabase.read`
and :meth:`FileDatabase.write` (which wait for a lock up to ``busy_timeout_ms``, 5 s). Only the
hot path :meth:`FileDatabase.add` is special: it runs on its own connection and by default does
not wait at all: one attempt, and a lock held by another process (SQLite's) or by another
thread of this one (the per-file Python lock) raises :class:`OutboxBusyError` at once, so the
caller writes the event to its own spool instead. (Measured with 4 processes x 2 threads
tracking while their workers drain: waiting 1 ms before spooling tripled the median track()
and did not lower p99; docs/performance.md.) With ``add_busy_timeout_ms`` > 0 it tries again
every 0.2 ms up to that long, finer than SQLite's own busy handler.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Final, Protocol

from .._exceptions import OutboxBusyError, OutboxError
from .._log import RateLimitedLogger, logger
from . import files, maintenance, opening, queue, recovery, repair
from .connections import CONNECTIONS, close_quietly, connect, transaction
from .errors import is_busy, map_error
from .schema import (
    ADD_WAL_AUTOCHECKPOINT,
    MAIN_WAL_AUTOCHECKPOINT,
    SQL_ADD,
    SQL_REMOVED,
    apply_pragmas,
)

__all__ = ["Database", "FileDatabase"]

#: How often add() tries again while another process holds the write lock. SQLite's own busy
#: handler sleeps 1 ms, then 2 ms, then 5 ms: far coarser than the inserts and batches it waits
#: for (4 processes tracking: p99 4-5 ms with it, 1.1-1.3 ms with this; docs/performance.md).
ADD_RETRY_SECONDS: Final = 0.0002

_SERIALS = itertools.count(1)


class Database(Protocol):
    """What the outbox needs of its database: this file, or the in-memory one (:mod:`.memory`)."""

    label: str
    server_url: str

    @property
    def durable(self) -> bool: ...
    def read(self, op: str) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
    def write(self, op: str) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
    def snapshot(self, op: str) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
    def add(self, row: tuple[str, str, float], max_pending: int) -> tuple[bool, int]: ...
    def checkpoint(self) -> None: ...
    def ensure_file(self) -> int: ...
    def after_fork_in_child(self) -> None: ...
    def close(self) -> None: ...


class FileDatabase:
    """One outbox file: opened, checked and set up at construction; connections on demand."""

    def __init__(
        self,
        path: pathlib.Path,
        *,
        synchronous: str,
        defaults: Mapping[str, str],
        clock: Callable[[], float],
        add_busy_timeout_ms: float,
        busy_timeout_ms: int,
    ) -> None:
        self.path = path
        self.label = str(path)
        self.server_url = defaults.get("server_url", "")
        self._synchronous = synchronous
        self._defaults = dict(defaults)
        self._mode = self._defaults["mode"]
        self._clock = clock
        self._add_busy_timeout_ms = add_busy_timeout_ms
        self._busy_timeout_ms = busy_timeout_ms
        self._serial = next(_SERIALS)
        self._lock_key = os.path.realpath(path)
        self._closed = False
        self._removed_seen = 0  # a lower bound of meta.removed_count, for add()
        #: Set while the file is lost and not yet recreated: why, and the rows read from it.
        self._lost: str | None = None
        self._rescued: repair.FileContents | None = None
        self._log = RateLimitedLogger(60.0)
        self._wal = maintenance.WalWatch(path, self.read)
        CONNECTIONS.enter()  # a fork waits until the new connection is registered
        try:
            conn = self._open_file()
            self._file_id = files.identity(path)
            CONNECTIONS.register(self._serial, conn, pinned=True)
            self._known = recovery.snapshot(path, self._file_id, CONNECTIONS.generation)
        finally:
            CONNECTIONS.exit()
        # Never close from the finalizer itself: it may run inside a registry lock (a GC).
        self._finalizer = weakref.finalize(self, CONNECTIONS.close_soon, self._serial)
        # Not at interpreter exit: a daemon worker may still be finishing its last flush, and
        # the OS releases the file anyway (the WAL is recovered by the next open).
        self._finalizer.atexit = False

    # --- opening --------------------------------------------------------------------------
    def _open_file(self) -> sqlite3.Connection:
        """Create the file if needed, check it, set it up (see :mod:`.opening`)."""
        conn, self.server_url = opening.open_outbox(
            self.path,
            busy_timeout_ms=self._busy_timeout_ms,
            synchronous=self._synchronous,
            defaults=self._defaults,
            clock=self._clock,
        )
        return conn

    @property
    def durable(self) -> bool:
        """False while the rows of a lost file wait in memory for its successor."""
        return self._rescued is None

    # --- connections and transactions ----------------------------------------------------
    def connection(self, fast: bool = False) -> sqlite3.Connection:
        """This thread's connection for this pid (opened on first use, and after a fork)."""
        if self._closed:
            raise OutboxError(f"outbox {self.label} is closed")
        if self._lost is not None:
            raise OutboxError(f"outbox {self.label} was {self._lost}; it is being recreated")
        # The registry holds this thread's connections (see connections.ConnectionRegistry):
        # first use in this thread, or after a fork or a recreate, opens a new one.
        conn = CONNECTIONS.lookup(self._serial, fast=fast)
        if conn is None:
            conn = self._connect(fast)
        return conn

    def _connect(self, fast: bool) -> sqlite3.Connection:
        # Never open by name a file that is not the one we checked: a database moved over
        # ours would get our old -wal replayed into it (and then our rows).
        generation = CONNECTIONS.generation
        reason = recovery.lost_because(self.path, self._known, generation)
        if reason is not None:
            self._lost = reason
            raise OutboxError(f"outbox {self.label} was {reason}; it is being recreated")
        busy_ms = 0 if fast else self._busy_timeout_ms  # add() waits by itself: _insert()
        conn = connect(self.path, busy_timeout_ms=busy_ms, create=False)
        try:
            apply_pragmas(
                conn,
                busy_timeout_ms=busy_ms,
                synchronous=self._synchronous,
                wal_autocheckpoint=ADD_WAL_AUTOCHECKPOINT if fast else MAIN_WAL_AUTOCHECKPOINT,
            )
        except BaseException:
            close_quietly([conn])
            raise
        maintenance.fit_autocheckpoint(conn, self.path, fast=fast)
        renewed = generation != self._known.generation  # the first since a fork: the anchor
        CONNECTIONS.register(self._serial, conn, pinned=renewed, fast=fast)
        if renewed:
            self._known = recovery.snapshot(self.path, self._file_id, generation)
        return conn

    @contextlib.contextmanager
    def read(self, op: str) -> Iterator[sqlite3.Connection]:
        """A connection for reads (autocommit); sqlite3 errors mapped."""
        CONNECTIONS.enter()
        try:
            yield self.connection()
        except sqlite3.Error as exc:
            raise map_error(exc, op, self.label) from exc
        finally:
            CONNECTIONS.exit()

    @contextlib.contextmanager
    def snapshot(self, op: str) -> Iterator[sqlite3.Connection]:
        """A connection inside one read transaction: every query sees the same state."""
        with self.read(op) as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("ROLLBACK")

    def _lock_for_writing(self, op: str, fast: bool) -> threading.Lock:
        """Take this process's write lock of the file (threads queue here, not in SQLite)."""
        lock = CONNECTIONS.write_lock(self._lock_key)
        if lock.acquire(blocking=False):  # the usual case, and 3x cheaper than a timed wait
            return lock
        # fast: add(), whose event then goes to the spool: it never waits long for anyone
        timeout_ms = self._add_busy_timeout_ms if fast else self._busy_timeout_ms
        if not timeout_ms or not lock.acquire(timeout=timeout_ms / 1000):
            raise OutboxBusyError(
                f"{op}: outbox {self.label} is locked by another thread of this process "
                f"for more than {timeout_ms} ms"
            )
        return lock

    @contextlib.contextmanager
    def write(self, op: str) -> Iterator[sqlite3.Connection]:
        """A connection inside ``BEGIN IMMEDIATE`` under this process's write lock."""
        CONNECTIONS.enter()
        try:
            lock = self._lock_for_writing(op, fast=False)
            try:
                conn = self.connection()
                maintenance.fit_autocheckpoint(conn, self.path, fast=False)
                with transaction(conn):
                    yield conn
            finally:
                lock.release()
        except sqlite3.Error as exc:
            raise map_error(exc, op, self.label) from exc
        finally:
            CONNECTIONS.exit()

    # --- the hot path ----------------------------------------------------------------------
    def add(self, row: tuple[str, str, float], max_pending: int) -> tuple[bool, int]:
        """Insert one row (autocommit, short busy timeout); ``(inserted, evicted)``."""
        evicted = 0
        CONNECTIONS.enter()
        try:
            lock = self._lock_for_writing("add", fast=True)
            try:
                conn = self.connection(fast=True)
                cursor = self._insert(conn, row)
                inserted, last_id = cursor.rowcount == 1, cursor.lastrowid or 0
                # Freed here, inside the gate: freeing a cursor resets its statement, which
                # takes SQLite's process-wide allocator mutex; freed on return, after exit(),
                # a fork at that moment left the child that mutex locked forever.
                del cursor
                if not inserted:
                    return False, 0
                # Ids are consecutive, so this id minus the rows ever removed is the pending
                # count. The removed count cached here only lags behind, so this is an upper
                # bound: the exact check (one more transaction) runs only when it is over.
                if last_id - self._removed_seen > max_pending:
                    evicted = self._evict_now(conn, max_pending)
            finally:
                lock.release()
            self._wal.after_insert(conn)
        except sqlite3.Error as exc:
            raise map_error(exc, "add", self.label) from exc
        finally:
            CONNECTIONS.exit()
        return True, evicted

    def _insert(self, conn: sqlite3.Connection, row: tuple[str, str, float]) -> sqlite3.Cursor:
        """``SQL_ADD``, tried again every ``ADD_RETRY_SECONDS`` while another process holds
        the write lock, for at most ``add_busy_timeout_ms``; then the busy error goes up."""
        deadline = 0.0
        while True:
            try:
                return conn.execute(SQL_ADD, row)
            except sqlite3.OperationalError as exc:
                now = time.monotonic()
                if not is_busy(exc) or (deadline and now >= deadline):
                    raise
                if not self._add_busy_timeout_ms:
                    raise  # no wait at all: the caller has somewhere else to write
                deadline = deadline or now + self._add_busy_timeout_ms / 1000
                time.sleep(ADD_RETRY_SECONDS)

    def _evict_now(self, conn: sqlite3.Connection, max_pending: int) -> int:
        """Evict in a transaction of its own; 0 if locked (the event is stored, the next
        add() or add_many() evicts)."""
        try:
            with transaction(conn):
                evicted = queue.evict(conn, max_pending)
            self._removed_seen = int(conn.execute(SQL_REMOVED).fetchone()[0])  # committed
        except sqlite3.Error as exc:
            if is_busy(exc):
                return 0
            raise
        return evicted

    def checkpoint(self) -> None:
        """The worker's maintenance, once a cycle: checkpoint the WAL (truncating it when over
        its budget), and VACUUM a nearly empty file (see :mod:`.maintenance`)."""
        with self.read("checkpoint") as conn:
            maintenance.checkpoint(conn, self.path)
        lock = self._lock_for_writing("vacuum", fast=False)
        try:
            with self.read("vacuum") as conn:
                maintenance.give_space_back(conn, self.path)
        finally:
            lock.release()

    # --- a file deleted or replaced while open --------------------------------------------------
    def ensure_file(self) -> int:
        """Recreate the file if it (or its -wal / -shm) was deleted or replaced while open;
        returns the rows moved. A failed attempt keeps the rows and is retried next call."""
        if self._closed:
            return 0
        reason = self._lost or recovery.lost_because(self.path, self._known, CONNECTIONS.generation)
        if reason is None and self._rescued is None:
            return 0
        CONNECTIONS.enter()
        try:
            lock = self._lock_for_writing("ensure_file", fast=False)
            try:
                return self._recreate(reason or "lost")
            finally:
                lock.release()
        except sqlite3.Error as exc:
            raise map_error(exc, "ensure_file", self.label) from exc
        finally:
            CONNECTIONS.exit()

    def _recreate(self, reason: str) -> int:
        """Under the write lock: copy every row into a new file at ``path``."""
        if self._rescued is None:
            old = CONNECTIONS.oldest(self._serial)  # opened before the file went away
            if old is None:
                raise OutboxError(f"outbox {self.path} was {reason} and no connection is left")
            self._rescued = repair.copy_out(old)
            self._lost = reason
            CONNECTIONS.retire(self._serial)  # no more writes into the lost file
        contents = self._rescued
        try:
            try:
                # Under the creation lock: another process recreating the same file at the
                # same moment either made the successor already (merged into) or waits.
                with files.creation_lock(self.path, self._busy_timeout_ms / 1000):
                    fresh = recovery.clear_the_way(
                        self.path, reason, self._mode, self._clock(), self._known
                    )
                    conn = self._open_file()
            except OSError as exc:
                raise OutboxError(f"{exc.strerror or exc}") from exc
        except OutboxError as exc:
            self._log.error(
                "recreate",
                "outbox %s was %s and cannot be recreated yet (%s); its %d pending and %d "
                "dead-lettered events are kept in memory and it is tried again every cycle",
                self.path,
                reason,
                exc,
                len(contents.pending),
                len(contents.dead),
            )
            raise
        try:
            with transaction(conn):
                repair.copy_in(conn, contents, fresh=fresh)
        finally:
            close_quietly([conn])  # threads reconnect lazily (retire() moved the generation)
        self._file_id = files.identity(self.path)
        self._known = recovery.snapshot(self.path, self._file_id, -1)  # re-read at next open
        self._rescued = self._lost = None
        self._removed_seen = 0
        self._log.reset("recreate")
        logger.warning(
            "outbox %s was deleted or replaced while in use (%s); recreated it and moved %d "
            "pending and %d dead-lettered events into it",
            self.path,
            reason,
            len(contents.pending),
            len(contents.dead),
        )
        return len(contents.pending) + len(contents.dead)

    def after_fork_in_child(self) -> None:
        """Connections reopen lazily (the registry moved the generation); no thread here."""
        self._wal.after_fork_in_child()

    def close(self) -> None:
        """Close this database's connections in this process; later calls raise OutboxError."""
        self._closed = True
        self._finalizer.detach()
        CONNECTIONS.close_owner(self._serial)
