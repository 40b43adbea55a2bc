"""Connections: one per (thread, pid) and outbox, a fork gate, and ``transaction()``.

Connections follow ``diskcache``: one connection per (thread, pid); ``isolation_level=None``
with explicit ``BEGIN IMMEDIATE`` for every multi-statement write (:func:`transaction`).

Fork safety: SQLite's unix VFS keeps per-process lock bookkeeping in memory, and a child
forked while the parent holds a connection inherits that bookkeeping without the locks. Its
fresh connections then skip the ``fcntl`` calls they need, and when the parent later closes its
last connection it deletes a WAL the child is still writing to (the child's next commits are
lost; ``tests/test_store_connections.py::test_fork_parent_close_keeps_child_writes``
reproduces it). So an ``os.register_at_fork`` hook waits for in-flight outbox calls of the
parent (bounded) and closes its connections before the fork; both sides reopen lazily.
Connections a child inherits anyway are never closed by the child (that would drop the
parent's locks): they stay referenced in the registry so garbage collection cannot close them.

Finalizers never take a registry lock nor call SQLite: a garbage collection can run inside
any allocation, also one made while this thread holds the registry's lock, and a finalizer
that took the same (non-reentrant) lock there hung the thread forever. A dropped outbox only
queues its serial (:meth:`ConnectionRegistry.close_soon`), a dropped connection itself
(:meth:`ConnectionRegistry.close_later`); the next call inside the gate closes them.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Final

import attrs

from .._log import logger
from . import forklocks

__all__ = [
    "CONNECTIONS",
    "ConnectionRegistry",
    "close_quietly",
    "connect",
    "leak",
    "transaction",
]

#: How long a fork waits for in-flight outbox calls before giving up on closing connections.
FORK_WAIT_SECONDS: Final = 10.0


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def connect(path: pathlib.Path, *, busy_timeout_ms: int, create: bool) -> sqlite3.Connection:
    """A new autocommit connection to ``path`` (``create=False``: the file must exist)."""
    # mode=rw: never create the file there. If it was deleted, a plain connect would make an
    # empty one (0644, no tables) in its place; the outbox recreates it properly instead.
    target = str(path) if create else path.as_uri() + "?mode=rw"
    return sqlite3.connect(
        target,
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,
        check_same_thread=False,
        uri=not create,
    )


def close_quietly(conns: Iterable[sqlite3.Connection]) -> None:
    """Close each connection, ignoring SQLite's complaints."""
    for conn in conns:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


def leak(conn: sqlite3.Connection) -> None:
    """Keep ``conn`` alive until the process ends, even through interpreter finalization."""
    try:
        import ctypes

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))
    except Exception:  # no ctypes: a module-level reference is the next best thing
        _LEAKED.append(conn)


_LEAKED: list[sqlite3.Connection] = []


@attrs.define(eq=False)
class _Registered:
    pid: int
    owner: int  # serial of the SqliteOutbox that opened it
    thread: weakref.ref[threading.Thread]
    conn: sqlite3.Connection
    pinned: bool = False  # kept open for the owner's life, whichever thread opened it
    fast: bool = False  # the connection of add(), apart from the others of its thread


def _thread_alive(ref: weakref.ref[threading.Thread]) -> bool:
    thread = ref()
    return thread is not None and thread.is_alive()


class ConnectionRegistry:
    """Every connection of every outbox, plus the gate that makes forking safe.

    Outbox calls run inside the gate (``enter()``/``exit()``, or ``with gate():``); a fork
    waits until none is in flight, closes this process's connections and lets both sides
    reopen lazily. Connections of another pid (inherited by a forked child) are kept here
    forever and never closed: closing them in the child would release locks the parent relies
    on.

    Every call into SQLite runs inside the gate, the closing and the freeing of a connection
    included: SQLite takes process-wide mutexes (its allocator's, the unix VFS's), and a fork
    while another thread holds one leaves it locked forever in the child, whose first SQLite
    call then hangs (``tests/reliability/test_fork_storm.py``). So the registry, not a
    ``threading.local``, holds each thread's connections: a thread that ends drops no
    connection (its freeing would run SQLite outside the gate); the next registry call closes
    and frees it inside.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # entered directly by enter()/exit(): no Python wrapper
        self._cond = threading.Condition(self._mutex)
        self._active = 0
        self._depth = threading.local()  # this thread's nesting of enter() calls
        #: Forks being prepared or under way. A count, not a flag: os.fork() runs the before-
        #: hooks of a second forking thread while the first fork is still under way (the import
        #: lock is taken after them), and the first one's after-hook must not reopen the gate
        #: under the second fork.
        self._forking = 0
        self.generation = 0
        self._entries: list[_Registered] = []
        #: (owner, thread ident, fast) -> entry, for this pid and generation only.
        self._by_thread: dict[tuple[int, int, bool], _Registered] = {}
        self._write_locks: dict[str, threading.Lock] = {}
        self._doomed: list[int] = []  # owners dropped by GC: closed by the next call, unlocked
        self._orphans: list[sqlite3.Connection] = []  # unregistered ones, likewise

    def write_lock(self, key: str) -> threading.Lock:
        """The lock that serialises this process's writes to one file."""
        lock = self._write_locks.get(key)
        if lock is None:
            with self._cond:
                lock = self._write_locks.setdefault(key, threading.Lock())
        return lock

    # --- the gate ---------------------------------------------------------------------------
    def enter(self) -> None:
        """Mark an outbox call in flight (waits while a fork is being prepared)."""
        depth = getattr(self._depth, "n", 0)
        self._depth.n = depth + 1
        if depth:  # nested in a call of this thread that is already counted: never wait here
            return  # (a fork being prepared waits for the outer call, which would wait for us)
        with self._mutex:
            while self._forking:
                self._cond.wait()
            self._active += 1
        if self._doomed or self._orphans:
            self._close_doomed()

    def exit(self) -> None:
        """End of an outbox call."""
        self._depth.n -= 1
        if self._depth.n:
            return
        with self._mutex:
            self._active -= 1
            if not self._active and self._forking:  # only before_fork() waits for zero
                self._cond.notify_all()

    @contextlib.contextmanager
    def gate(self) -> Iterator[None]:
        """``enter()`` ... ``exit()`` around a block that calls SQLite."""
        self.enter()
        try:
            yield
        finally:
            self.exit()

    # --- this thread's connections (call inside the gate) -------------------------------------
    def lookup(self, owner: int, *, fast: bool = False) -> sqlite3.Connection | None:
        """The connection ``owner`` opened in this thread (this pid and generation), if any."""
        entry = self._by_thread.get((owner, threading.get_ident(), fast))
        # A thread id is reused once its thread ended: the entry must be this very thread's.
        if entry is None or entry.thread() is not threading.current_thread():
            return None
        return entry.conn

    def register(
        self, owner: int, conn: sqlite3.Connection, *, pinned: bool = False, fast: bool = False
    ) -> None:
        """Keep ``conn`` as this thread's connection of ``owner``; close the connections left
        behind by finished threads.

        A ``pinned`` connection stays open while its owner lives (until a fork or a close):
        with one connection always open, SQLite never deletes the ``-wal`` and ``-shm`` of a
        file this process uses, so a missing one means someone else removed it.
        """
        forklocks.prepare()
        pid = os.getpid()
        thread = threading.current_thread()
        entry = _Registered(pid, owner, weakref.ref(thread), conn, pinned, fast)
        with self._cond:
            stale = [
                e
                for e in self._entries
                if e.pid == pid and not e.pinned and not _thread_alive(e.thread)
            ]
            self._forget(stale)
            self._entries.append(entry)
            self._by_thread[(owner, thread.ident or 0, fast)] = entry
        close_quietly(e.conn for e in stale)

    def _forget(self, entries: list[_Registered]) -> None:
        """Under the lock: drop ``entries`` from both indexes."""
        if not entries:
            return
        gone = {id(e) for e in entries}
        self._entries = [e for e in self._entries if id(e) not in gone]
        self._by_thread = {k: e for k, e in self._by_thread.items() if id(e) not in gone}

    def retire(self, owner: int) -> None:
        """Forget ``owner``'s connections of this process without ever closing them.

        They belong to a file that was deleted or replaced. Closing the last one would
        checkpoint and then delete, by name, a ``-wal`` and ``-shm`` that now belong to the new
        file (sqlite.org/howtocorrupt.html, "unlinking a database file while in use"), so they
        are leaked on purpose: the OS releases them at exit. Every thread reconnects.
        """
        pid = os.getpid()
        with self._cond:
            mine = [e for e in self._entries if e.pid == pid and e.owner == owner]
            self._forget(mine)
            self.generation += 1
        for entry in mine:
            leak(entry.conn)

    def oldest(self, owner: int) -> sqlite3.Connection | None:
        """The first connection ``owner`` opened in this process that is still open."""
        pid = os.getpid()
        with self._cond:
            return next((e.conn for e in self._entries if e.pid == pid and e.owner == owner), None)

    def close_owner(self, owner: int) -> None:
        """Close the connections ``owner`` opened in this process (from any thread).

        Never call this from a finalizer: use :meth:`close_soon`.
        """
        with self.gate():
            self._close_owner(owner)

    def _close_owner(self, owner: int) -> None:
        pid = os.getpid()
        with self._cond:
            mine = [e for e in self._entries if e.pid == pid and e.owner == owner]
            self._forget(mine)
        close_quietly(e.conn for e in mine)

    # --- from finalizers: no lock, no SQLite ----------------------------------------------------
    def close_soon(self, owner: int) -> None:
        """From a finalizer: have ``owner``'s connections closed by the next registry call.

        Takes no lock (``list.append`` is atomic), so it is safe inside a garbage collection
        that interrupts this very registry while it holds its lock.
        """
        self._doomed.append(owner)

    def close_later(self, conn: sqlite3.Connection) -> None:
        """From a finalizer: have the next registry call close and free ``conn``."""
        self._orphans.append(conn)

    def close_doomed(self) -> None:
        """Close the connections of outboxes that were garbage-collected (never under a lock)."""
        with self.gate():
            self._close_doomed()

    def _close_doomed(self) -> None:
        """Inside the gate: close what finalizers queued."""
        while self._orphans:
            try:
                conn = self._orphans.pop()
            except IndexError:  # another thread took the last one
                break
            close_quietly([conn])
            del conn
        while self._doomed:
            try:
                owner = self._doomed.pop()
            except IndexError:
                return
            self._close_owner(owner)

    # --- fork -----------------------------------------------------------------------------------
    def before_fork(self) -> None:
        """Wait (bounded) for in-flight calls, then close this process's connections."""
        with self._cond:
            self._forking += 1
            deadline = time.monotonic() + FORK_WAIT_SECONDS
            while self._active and self._cond.wait(max(0.0, deadline - time.monotonic())):
                pass
            if self._active:
                logger.warning(
                    "fork while an outbox call was still running after %.0fs; the child "
                    "inherits open SQLite connections",
                    FORK_WAIT_SECONDS,
                )
                forklocks.hold()
                return
            pid = os.getpid()
            mine = [e for e in self._entries if e.pid == pid]
            self._forget(mine)
            self.generation += 1
            # Closed under the lock: a second thread forking now must not fork before they
            # are. A child forked while one is still open inherits SQLite's record of its
            # locks, which the child does not hold (POSIX locks are not inherited), so the
            # child's own connections take none; once this process had closed, another
            # process's last close deleted the -wal the child was writing to (the fork-storm
            # test, under strace: three forks while a fourth thread was still closing).
            close_quietly(e.conn for e in mine)
            del mine
        forklocks.hold()  # last: SQLite's own mutexes, for SQLite calls outside the gate

    def after_fork_in_parent(self) -> None:
        """Let outbox calls run again (once no other fork is under way)."""
        forklocks.release()
        with self._cond:
            self._forking -= 1
            if not self._forking:
                self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        """Fresh locks: only the forking thread exists here, and a lock may have been held."""
        forklocks.release()  # first: SQLite is usable again (this hook runs before the others)
        self._mutex = threading.Lock()  # entered directly by enter()/exit(): no Python wrapper
        self._cond = threading.Condition(self._mutex)
        self._active = 0
        self._depth = threading.local()
        self._forking = 0
        self._by_thread = {}  # the inherited connections stay in _entries, never closed here
        self._write_locks = {}
        self._doomed = []
        self._orphans = []  # the parent's to close, never the child's
        self.generation += 1


CONNECTIONS: Final = ConnectionRegistry()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=CONNECTIONS.before_fork,
        after_in_parent=CONNECTIONS.after_fork_in_parent,
        after_in_child=CONNECTIONS.after_fork_in_child,
    )
