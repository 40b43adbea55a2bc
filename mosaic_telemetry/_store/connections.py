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

Finalizers never take a registry lock: a garbage collection can run inside any allocation,
also one made while this thread holds the registry's lock, and a finalizer that took the same
(non-reentrant) lock there hung the thread forever. A dropped outbox only queues its serial
(:meth:`ConnectionRegistry.close_soon`); the next registry call closes its connections,
outside the lock.
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


def _thread_alive(ref: weakref.ref[threading.Thread]) -> bool:
    thread = ref()
    return thread is not None and thread.is_alive()


class ConnectionRegistry:
    """Every connection of every outbox, plus the gate that makes forking safe.

    Outbox calls ``enter()``/``exit()`` around their use of a connection; a fork waits until
    none is in flight, closes this process's connections and lets both sides reopen lazily.
    Connections of another pid (inherited by a forked child) are kept here forever and never
    closed: closing them in the child would release locks the parent relies on.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # entered directly by enter()/exit(): no Python wrapper
        self._cond = threading.Condition(self._mutex)
        self._active = 0
        self._forking = False
        self.generation = 0
        self._entries: list[_Registered] = []
        self._write_locks: dict[str, threading.Lock] = {}
        self._doomed: list[int] = []  # owners dropped by GC: closed by the next call, unlocked

    def write_lock(self, key: str) -> threading.Lock:
        """The lock that serialises this process's writes to one file."""
        lock = self._write_locks.get(key)
        if lock is None:
            self.close_doomed()
            with self._cond:
                lock = self._write_locks.setdefault(key, threading.Lock())
        return lock

    def enter(self) -> None:
        """Mark an outbox call in flight (waits while a fork is being prepared)."""
        if self._doomed:
            self.close_doomed()
        with self._mutex:
            while self._forking:
                self._cond.wait()
            self._active += 1

    def exit(self) -> None:
        """End of an outbox call."""
        with self._mutex:
            self._active -= 1
            if not self._active and self._forking:  # only before_fork() waits for zero
                self._cond.notify_all()

    def register(self, owner: int, conn: sqlite3.Connection, *, pinned: bool = False) -> None:
        """Keep ``conn`` referenced; close connections left behind by finished threads.

        A ``pinned`` connection stays open while its owner lives (until a fork or a close):
        with one connection always open, SQLite never deletes the ``-wal`` and ``-shm`` of a
        file this process uses, so a missing one means someone else removed it.
        """
        self.close_doomed()
        pid = os.getpid()
        entry = _Registered(pid, owner, weakref.ref(threading.current_thread()), conn, pinned)
        with self._cond:
            stale = [
                e
                for e in self._entries
                if e.pid == pid and not e.pinned and not _thread_alive(e.thread)
            ]
            self._entries = [e for e in self._entries if e not in stale]
            self._entries.append(entry)
        close_quietly(e.conn for e in stale)

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
            self._entries = [e for e in self._entries if e not in mine]
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
        pid = os.getpid()
        with self._cond:
            mine = [e for e in self._entries if e.pid == pid and e.owner == owner]
            self._entries = [e for e in self._entries if e not in mine]
        close_quietly(e.conn for e in mine)

    def close_soon(self, owner: int) -> None:
        """From a finalizer: have ``owner``'s connections closed by the next registry call.

        Takes no lock (``list.append`` is atomic), so it is safe inside a garbage collection
        that interrupts this very registry while it holds its lock.
        """
        self._doomed.append(owner)

    def close_doomed(self) -> None:
        """Close the connections of outboxes that were garbage-collected (never under a lock)."""
        while self._doomed:
            try:
                owner = self._doomed.pop()
            except IndexError:  # another thread took the last one
                return
            self.close_owner(owner)

    def before_fork(self) -> None:
        """Wait (bounded) for in-flight calls, then close this process's connections."""
        with self._cond:
            self._forking = True
            deadline = time.monotonic() + FORK_WAIT_SECONDS
            while self._active and self._cond.wait(max(0.0, deadline - time.monotonic())):
                pass
            if self._active:
                logger.warning(
                    "fork while an outbox call was still running after %.0fs; the child "
                    "inherits open SQLite connections",
                    FORK_WAIT_SECONDS,
                )
                return
            pid = os.getpid()
            mine = [e for e in self._entries if e.pid == pid]
            self._entries = [e for e in self._entries if e.pid != pid]
            self.generation += 1
        close_quietly(e.conn for e in mine)

    def after_fork_in_parent(self) -> None:
        """Let outbox calls run again."""
        with self._cond:
            self._forking = False
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        """Fresh locks: only the forking thread exists here, and a lock may have been held."""
        self._mutex = threading.Lock()  # entered directly by enter()/exit(): no Python wrapper
        self._cond = threading.Condition(self._mutex)
        self._active = 0
        self._forking = False
        self._write_locks = {}
        self._doomed = []
        self.generation += 1


CONNECTIONS: Final = ConnectionRegistry()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=CONNECTIONS.before_fork,
        after_in_parent=CONNECTIONS.after_fork_in_parent,
        after_in_child=CONNECTIONS.after_fork_in_child,
    )
