"""The durable outbox: every tracked event is written here before ``track()`` returns.

:class:`SqliteOutbox` owns one SQLite file (WAL mode) that several threads and several
processes may share; :class:`MemoryOutbox` is the bounded in-memory stand-in used when the
file cannot be used at all. Both expose the same methods (``_delivery.ports.Outbox``), so the
worker never knows which one it drains.

Delivery flow: ``add()`` inserts a row; the worker ``claim()``-s a batch under a lease
(owner token, host, pid, expiry), sends it, then ``ack()``-s (deletes) what the server took,
``dead_letter()``-s what it rejected for its content, or ``release()``-s the rest for a later
retry. A lease that is never acked expires, and a lease whose process died on this host is
cleared at once by :meth:`SqliteOutbox.reclaim_orphaned_leases`.

File format (schema_version 1), plain SQLite, readable with ``sqlite3 outbox.sqlite3``::

    events       one row per event waiting for delivery (leased or not)
      id               INTEGER PRIMARY KEY                 delivery order; oldest evicted first;
                                                          never reused (see removed_max_id)
      event_id         TEXT NOT NULL UNIQUE                the event's uuid, the server's dedup key
      body             TEXT NOT NULL                       the event as JSON text
      enqueued_at      REAL NOT NULL                       epoch seconds when tracked
      attempts         INTEGER NOT NULL DEFAULT 0          claims so far
      next_attempt_at  REAL NOT NULL DEFAULT 0             not claimed before this epoch second
      lease_owner      TEXT                                token of the sender holding it, or NULL
      lease_host       TEXT                                that sender's host name
      lease_pid        INTEGER                             that sender's process id
      lease_expires_at REAL                                the lease is void after this

    dead         events the server rejected for their content (never retried by themselves)
      id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, body TEXT NOT NULL,
      enqueued_at REAL, dead_at REAL NOT NULL, attempts INTEGER, reason TEXT NOT NULL,
      http_status INTEGER

    meta         key TEXT PRIMARY KEY, value TEXT NOT NULL
      schema_version  "1"                   another value: the file is refused, never modified
      server_url      URL of the first client that created the file
      mode            "real" or "dry_run"   a client of the other mode refuses the file
      created_at      epoch seconds
      not_before      epoch seconds: no sending before (a shared Retry-After pause)
      removed_count   rows ever removed from events (delivered, dead-lettered, evicted, purged)
      removed_max_id  the highest id ever removed from events
      counter_<name>  persisted counters: delivered, duplicates, dead, evicted, retried, dry_run
      last_error      JSON {"at": epoch seconds, "error": text}: the last background error

    predictions  key TEXT PRIMARY KEY, body TEXT NOT NULL, fetched_at REAL NOT NULL

    index events_leased ON events(lease_expires_at) WHERE lease_owner IS NOT NULL
    (no triggers: every DELETE FROM events goes through _delete_events(), which notes how many
    rows it removed and the highest id among them in removed_count / removed_max_id; opening
    the file repairs both should anything else have deleted rows)

Ids are handed out 1, 2, 3, ... by one INSERT: the next id is ``max(max(id), removed_max_id) +
1``. So an id is never reused (an ack by id can never delete a newer event), and the pending
count is ``highest id so far - removed_count``: O(1), no ``COUNT(*)``, and no counter row
written per insert. ``add()`` writes the events row and its event_id index entry, nothing else
(an AUTOINCREMENT sequence row or an insert-trigger counter would each cost one more page in the
WAL per commit, ≈ 8 µs each: see docs/performance.md).

Connections follow ``diskcache``: all pragmas in :data:`_PRAGMAS`, applied by
:func:`_apply_pragmas`; one connection per (thread, pid); ``isolation_level=None`` with
explicit ``BEGIN IMMEDIATE`` for every multi-statement write. ``add()`` runs on its own
connection that waits for another process's lock a few milliseconds at most (trying again
every 0.2 ms, finer than SQLite's own busy handler), so ``track()`` never stalls: a lock held
longer raises :class:`OutboxBusyError` and the client hands the event to the worker. Threads
of one process take a per-file Python lock before writing, so they queue for each other
(promptly, up to 20 ms for add()) instead of polling SQLite's lock; only another process can
make add() report busy after a few milliseconds.

Fork safety: SQLite's unix VFS keeps per-process lock bookkeeping in memory, and a child
forked while the parent holds a connection inherits that bookkeeping without the locks. Its
fresh connections then skip the ``fcntl`` calls they need, and when the parent later closes its
last connection it deletes a WAL the child is still writing to (the child's next commits are
lost; ``tests/test_outbox.py::test_fork_parent_close_keeps_child_writes`` reproduces it).
So an ``os.register_at_fork`` hook waits for in-flight outbox calls of the parent (bounded)
and closes its connections before the fork; both sides reopen lazily. Connections a child
inherits anyway are never closed by the child (that would drop the parent's locks): they stay
referenced in a module-level registry so garbage collection cannot close them.

Every ``sqlite3`` exception is mapped here to :class:`OutboxError` (or
:class:`OutboxBusyError` for a lock); callers never see ``sqlite3.*``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pathlib
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, Literal

import attrs

from ._exceptions import OutboxBusyError, OutboxError
from ._log import RateLimitedLogger, logger

__all__ = [
    "COUNTER_NAMES",
    "META_LAST_ERROR",
    "SCHEMA_VERSION",
    "TABLES",
    "ClaimedRow",
    "LeaseOwner",
    "SqliteOutbox",
]

SCHEMA_VERSION: Final = "1"
#: The persisted counters :meth:`SqliteOutbox.counters` always reports (0 when never bumped).
COUNTER_NAMES: Final = ("delivered", "duplicates", "dead", "evicted", "retried", "dry_run")
#: The tables of the file format (documented above); an outbox file has every one of them.
TABLES: Final = ("events", "dead", "meta", "predictions")
#: The meta key of the last background error a worker reported (read by `mosaic-telemetry`).
META_LAST_ERROR: Final = "last_error"

#: Every pragma the outbox sets, in order; :func:`_apply_pragmas` is the only place that runs
#: them. busy_timeout comes first because journal_mode may wait for a lock.
_PRAGMAS: Final = (
    "PRAGMA busy_timeout = {busy_timeout_ms}",
    "PRAGMA journal_mode = WAL",  # readers never block the writer; persists in the file
    "PRAGMA synchronous = {synchronous}",  # NORMAL: survives a process crash; FULL: power loss
    # Shrink the WAL back to 4 MiB after a checkpoint. No connection checkpoints later than
    # that (_ADD_WAL_AUTOCHECKPOINT): a WAL truncated below the size add() fills it to makes
    # every commit past the limit grow the file again (+20% per add(); docs/performance.md).
    "PRAGMA journal_size_limit = 4194304",
    "PRAGMA wal_autocheckpoint = {wal_autocheckpoint}",
    "PRAGMA temp_store = MEMORY",
)
_SYNCHRONOUS: Final = {"normal": "NORMAL", "full": "FULL"}
#: add() connections only checkpoint as a safety net; the worker calls checkpoint().
_ADD_WAL_AUTOCHECKPOINT: Final = 1000  # pages: 4 MiB, the journal_size_limit
_MAIN_WAL_AUTOCHECKPOINT: Final = 1000
#: How long add() queues behind other threads of its own process (a GIL hand-off alone can take
#: the 5 ms switch interval) before it reports busy; other processes get add_busy_timeout_ms.
_ADD_THREAD_WAIT_MS: Final = 20
#: How often add() tries again while another process holds the write lock. SQLite's own busy
#: handler sleeps 1 ms, then 2 ms, then 5 ms: far coarser than the inserts and batches it waits
#: for (4 processes tracking: p99 4-5 ms with it, 1.1-1.3 ms with this; docs/performance.md).
_ADD_RETRY_SECONDS: Final = 0.0002
#: How long a fork waits for in-flight outbox calls before giving up on closing connections.
_FORK_WAIT_SECONDS: Final = 10.0

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL,
        enqueued_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_host TEXT,
        lease_pid INTEGER,
        lease_expires_at REAL)""",
    """CREATE TABLE IF NOT EXISTS dead (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL,
        enqueued_at REAL,
        dead_at REAL NOT NULL,
        attempts INTEGER,
        reason TEXT NOT NULL,
        http_status INTEGER)""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS predictions (
        key TEXT PRIMARY KEY, body TEXT NOT NULL, fetched_at REAL NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS events_leased
        ON events(lease_expires_at) WHERE lease_owner IS NOT NULL""",
)
#: Files of earlier development builds kept their counts with per-row triggers (an insert
#: trigger costs add() one more page per commit; a delete trigger costs ~3 µs a row).
_MIGRATIONS: Final = (
    "DROP TRIGGER IF EXISTS events_count_insert",
    "DROP TRIGGER IF EXISTS events_count_delete",
    "DROP TRIGGER IF EXISTS events_removed",
    "DELETE FROM meta WHERE key = 'pending_count'",
)
_SQL_NOTE_REMOVED: Final = (
    "UPDATE meta SET value = CASE key WHEN 'removed_count' THEN CAST(value AS INTEGER) + ?"
    " ELSE max(CAST(value AS INTEGER), ?) END WHERE key IN ('removed_count', 'removed_max_id')"
)
#: The highest events id handed out so far (ids are 1, 2, 3, ... and never reused).
_SQL_HIGHEST_ID: Final = (
    "max(coalesce((SELECT max(id) FROM events), 0),"
    " coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'removed_max_id'), 0))"
)
_SQL_ADD: Final = (  # constant fragments only
    "INSERT OR IGNORE INTO events (id, event_id, body, enqueued_at)"  # noqa: S608
    f" VALUES ({_SQL_HIGHEST_ID} + 1, ?, ?, ?)"
)
_SQL_REMOVED: Final = "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'removed_count'"
_SQL_PENDING: Final = f"SELECT {_SQL_HIGHEST_ID} - coalesce(({_SQL_REMOVED}), 0)"
_SQL_EVICT: Final = (
    "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?) RETURNING id"
)
_SQL_BUMP: Final = (
    "INSERT INTO meta (key, value) VALUES ('counter_' || ?, ?) ON CONFLICT (key) DO UPDATE"
    " SET value = CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER)"
)
_SQL_CLAIM: Final = (
    "UPDATE events SET lease_owner = ?, lease_host = ?, lease_pid = ?, lease_expires_at = ?,"
    " attempts = attempts + 1"
    " WHERE id IN (SELECT id FROM events"
    "  WHERE (lease_owner IS NULL OR lease_expires_at <= ?) AND next_attempt_at <= ?"
    "  ORDER BY id LIMIT ?)"
    " RETURNING id, event_id, body, attempts"
)
_SQL_RENEW: Final = (
    "UPDATE events SET lease_expires_at = ?"
    " WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))"
    " RETURNING id"
)
_SQL_RELEASE: Final = (
    "UPDATE events SET lease_owner = NULL, lease_host = NULL, lease_pid = NULL,"
    " lease_expires_at = NULL, next_attempt_at = COALESCE(?, next_attempt_at)"
    " WHERE lease_owner = ? AND id IN (SELECT value FROM json_each(?))"
)
_SQL_DELETE_IDS: Final = (
    "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?)) RETURNING id"
)
_SQL_TO_DEAD: Final = (
    "INSERT OR REPLACE INTO dead"
    " (event_id, body, enqueued_at, dead_at, attempts, reason, http_status)"
    " SELECT event_id, body, enqueued_at, ?, attempts, ?, ? FROM events WHERE id = ?"
)
# Requeued rows go back through _SQL_ADD one by one, so they get ids like any new event.
_SQL_REQUEUE_ALL: Final = "SELECT event_id, body, COALESCE(enqueued_at, ?) FROM dead ORDER BY id"
_SQL_REQUEUE_SOME: Final = (
    "SELECT event_id, body, COALESCE(enqueued_at, ?) FROM dead"
    " WHERE event_id IN (SELECT value FROM json_each(?)) ORDER BY id"
)
_SQL_LIST_EVENTS: Final = "SELECT * FROM events ORDER BY id LIMIT ?"
_SQL_LIST_DEAD: Final = "SELECT * FROM dead ORDER BY id LIMIT ?"
_PROTECTED_META: Final = frozenset(
    {"schema_version", "mode", "pending_count", "removed_count", "removed_max_id"}
)

# Extended result codes carry the primary code in their low byte.
_BUSY_CODES: Final = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
_CORRUPT_CODES: Final = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB

_eviction_log = RateLimitedLogger(60.0)
#: (pid, token) of every LeaseOwner built in this process; see reclaim_orphaned_leases.
_OWN_TOKENS: set[tuple[int, str]] = set()


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
    """One row leased by :meth:`SqliteOutbox.claim`; ``attempts`` includes this claim."""

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


def _orphaned_tokens(
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


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return code & 0xFF if isinstance(code, int) else None


def _is_busy(exc: sqlite3.Error) -> bool:
    code = _code(exc)
    if code is not None:
        return code in _BUSY_CODES
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = _code(exc)
    if code is not None:
        return code in _CORRUPT_CODES
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text


def _map_error(exc: sqlite3.Error, op: str, path: object) -> OutboxError:
    if _is_busy(exc):
        return OutboxBusyError(f"{op}: outbox {path} is locked by another writer ({exc})")
    return OutboxError(f"{op} failed on outbox {path}: {exc}")


def _apply_pragmas(
    conn: sqlite3.Connection, *, busy_timeout_ms: int, synchronous: str, wal_autocheckpoint: int
) -> None:
    """Apply :data:`_PRAGMAS` to a new connection (the one place pragmas are set)."""
    values = {
        "busy_timeout_ms": int(busy_timeout_ms),
        "synchronous": synchronous,
        "wal_autocheckpoint": int(wal_autocheckpoint),
    }
    for pragma in _PRAGMAS:
        conn.execute(pragma.format(**values)).fetchall()


def _ids_json(ids: Sequence[int]) -> str:
    return json.dumps([int(i) for i in ids])


def _delete_events(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> int:
    """Run ``sql`` (a ``DELETE FROM events ... RETURNING id``) inside a write transaction and
    note what it removed in meta (see the file format above); returns how many rows."""
    ids = [row[0] for row in conn.execute(sql, params).fetchall()]
    if ids:
        conn.execute(_SQL_NOTE_REMOVED, (len(ids), max(ids)))
    return len(ids)


def _bump(conn: sqlite3.Connection, name: str, n: int) -> None:
    if n:
        conn.execute(_SQL_BUMP, (name, int(n)))


def _rows_as_dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _check_name(name: str) -> str:
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"counter name must be letters, digits and '_': {name!r}")
    return name


def _check_max_pending(max_pending: int) -> int:
    if max_pending < 1:
        raise ValueError(f"max_pending must be at least 1, not {max_pending}")
    return max_pending


@attrs.define(eq=False)
class _Registered:
    pid: int
    owner: int  # serial of the SqliteOutbox that opened it
    thread: weakref.ref[threading.Thread]
    conn: sqlite3.Connection


class _Connections:
    """Every connection of every SqliteOutbox, plus the gate that makes forking safe.

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

    def write_lock(self, key: str) -> threading.Lock:
        """The lock that serialises this process's writes to one file."""
        lock = self._write_locks.get(key)
        if lock is None:
            with self._cond:
                lock = self._write_locks.setdefault(key, threading.Lock())
        return lock

    def enter(self) -> None:
        with self._mutex:
            while self._forking:
                self._cond.wait()
            self._active += 1

    def exit(self) -> None:
        with self._mutex:
            self._active -= 1
            if not self._active and self._forking:  # only before_fork() waits for zero
                self._cond.notify_all()

    def register(self, owner: int, conn: sqlite3.Connection) -> None:
        """Keep ``conn`` referenced; close connections left behind by finished threads."""
        pid = os.getpid()
        entry = _Registered(pid, owner, weakref.ref(threading.current_thread()), conn)
        with self._cond:
            stale = [e for e in self._entries if e.pid == pid and not _thread_alive(e.thread)]
            self._entries = [e for e in self._entries if e not in stale]
            self._entries.append(entry)
        _close_quietly(e.conn for e in stale)

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
            _leak(entry.conn)

    def oldest(self, owner: int) -> sqlite3.Connection | None:
        """The first connection ``owner`` opened in this process that is still open."""
        pid = os.getpid()
        with self._cond:
            return next((e.conn for e in self._entries if e.pid == pid and e.owner == owner), None)

    def close_owner(self, owner: int) -> None:
        """Close the connections ``owner`` opened in this process (from any thread)."""
        pid = os.getpid()
        with self._cond:
            mine = [e for e in self._entries if e.pid == pid and e.owner == owner]
            self._entries = [e for e in self._entries if e not in mine]
        _close_quietly(e.conn for e in mine)

    def before_fork(self) -> None:
        with self._cond:
            self._forking = True
            deadline = time.monotonic() + _FORK_WAIT_SECONDS
            while self._active and self._cond.wait(max(0.0, deadline - time.monotonic())):
                pass
            if self._active:
                logger.warning(
                    "fork while an outbox call was still running after %.0fs; the child "
                    "inherits open SQLite connections",
                    _FORK_WAIT_SECONDS,
                )
                return
            pid = os.getpid()
            mine = [e for e in self._entries if e.pid == pid]
            self._entries = [e for e in self._entries if e.pid != pid]
            self.generation += 1
        _close_quietly(e.conn for e in mine)

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        # Only the forking thread exists here; the lock may have been copied while held.
        self._mutex = threading.Lock()  # entered directly by enter()/exit(): no Python wrapper
        self._cond = threading.Condition(self._mutex)
        self._active = 0
        self._forking = False
        self._write_locks = {}
        self.generation += 1


def _leak(conn: sqlite3.Connection) -> None:
    """Keep ``conn`` alive until the process ends, even through interpreter finalization."""
    try:
        import ctypes

        ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))
    except Exception:  # no ctypes: a module-level reference is the next best thing
        _LEAKED.append(conn)


_LEAKED: list[sqlite3.Connection] = []


def _thread_alive(ref: weakref.ref[threading.Thread]) -> bool:
    thread = ref()
    return thread is not None and thread.is_alive()


def _close_quietly(conns: Iterable[sqlite3.Connection]) -> None:
    for conn in conns:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


_CONNECTIONS: Final = _Connections()
_SERIALS = itertools.count(1)


def _after_fork_in_child() -> None:
    _CONNECTIONS.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_CONNECTIONS.before_fork,
        after_in_parent=_CONNECTIONS.after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


class _CorruptFileError(Exception):
    """Internal: the file at open time is not a healthy SQLite database."""


class SqliteOutbox:
    """The durable outbox in one SQLite file, shared safely by threads and processes."""

    durable = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Literal["normal", "full"] = "normal",
        max_pending: int = 1000,
        server_url: str = "",
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        add_busy_timeout_ms: int = 5,
        busy_timeout_ms: int = 5000,
    ) -> None:
        if durability not in _SYNCHRONOUS:
            raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
        self.path = pathlib.Path(os.fspath(path)).expanduser().absolute()
        self.server_url = server_url
        self._synchronous = _SYNCHRONOUS[durability]
        self._max_pending = _check_max_pending(max_pending)
        self._mode = "dry_run" if dry_run else "real"
        self._clock = clock
        self._add_busy_timeout_ms = add_busy_timeout_ms
        self._busy_timeout_ms = busy_timeout_ms
        self._serial = next(_SERIALS)
        self._lock_key = os.path.realpath(self.path)
        self._local = threading.local()
        self._closed = False
        self._removed_seen = 0  # a lower bound of meta.removed_count, for add()
        _CONNECTIONS.enter()  # a fork waits until the new connection is registered
        try:
            conn = self._open_file()
            self._file_id = self._identity()
            self._local.key = (os.getpid(), _CONNECTIONS.generation)
            self._local.fast = None
            self._local.main = conn
            _CONNECTIONS.register(self._serial, conn)
        finally:
            _CONNECTIONS.exit()
        self._finalizer = weakref.finalize(self, _CONNECTIONS.close_owner, self._serial)
        # Not at interpreter exit: a daemon worker may still be finishing its last flush, and
        # the OS releases the file anyway (the WAL is recovered by the next open).
        self._finalizer.atexit = False

    def __repr__(self) -> str:
        return f"SqliteOutbox({str(self.path)!r})"

    # --- opening --------------------------------------------------------------------------
    def _open_file(self) -> sqlite3.Connection:
        """Create the file if needed, check it, set it up; move a corrupt file aside once."""
        self._prepare_location()
        try:
            return self._initialise()
        except _CorruptFileError as exc:
            aside = self._move_aside()
            logger.error(
                "outbox %s is corrupt (%s); moved it aside to %s and started an empty outbox",
                self.path,
                exc,
                aside,
            )
        self._prepare_location()
        try:
            return self._initialise()
        except _CorruptFileError as exc:
            raise OutboxError(
                f"outbox {self.path} is still corrupt after recreating: {exc}"
            ) from exc

    def _prepare_location(self) -> None:
        path = self.path
        if not path.parent.is_dir():
            try:
                os.makedirs(path.parent, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise OutboxError(
                    f"cannot create the directory {path.parent} for outbox {path}: "
                    f"{exc.strerror or exc}"
                ) from exc
        try:
            if path.is_dir():
                raise OutboxError(f"outbox path {path} is a directory, not a file")
            if not os.access(path.parent, os.W_OK | os.X_OK):
                raise OutboxError(f"cannot write outbox {path}: its directory is not writable")
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            os.close(os.open(path, flags, 0o600))  # SQLite gives -wal/-shm the same mode
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OutboxError(f"cannot create or open outbox file {path}: {reason}") from exc

    def _initialise(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                str(self.path),
                timeout=self._busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            self._check_existing(conn)  # read-only: a refused file is never modified
            _apply_pragmas(
                conn,
                busy_timeout_ms=self._busy_timeout_ms,
                synchronous=self._synchronous,
                wal_autocheckpoint=_MAIN_WAL_AUTOCHECKPOINT,
            )
            with _transaction(conn):
                self._create_schema(conn)
        except BaseException as exc:
            if conn is not None:
                _close_quietly([conn])
            if isinstance(exc, sqlite3.Error):
                if _is_corrupt(exc):
                    raise _CorruptFileError(str(exc)) from exc
                raise _map_error(exc, "opening", self.path) from exc
            raise
        return conn

    def _check_existing(self, conn: sqlite3.Connection) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return
        check = conn.execute("PRAGMA quick_check(1)").fetchone()
        if check is None or check[0] != "ok":
            raise _CorruptFileError(f"quick_check: {check[0] if check else 'no answer'}")
        if "meta" not in tables or not self._check_meta(conn):
            raise OutboxError(
                f"{self.path} is an SQLite database but not a mosaic_telemetry outbox "
                f"(tables: {', '.join(sorted(tables))}); refusing to touch it"
            )

    def _check_meta(self, conn: sqlite3.Connection) -> bool:
        """Refuse another schema version or mode; False when meta has no schema_version."""
        try:
            meta = dict(
                conn.execute(
                    "SELECT key, value FROM meta WHERE key IN (?, ?)", ("schema_version", "mode")
                ).fetchall()
            )
        except sqlite3.OperationalError:
            return False  # no meta table
        if "schema_version" not in meta:
            return False
        version = meta["schema_version"]
        if version != SCHEMA_VERSION:
            raise OutboxError(
                f"outbox {self.path} has schema_version {version!r}, this SDK reads "
                f"schema_version {SCHEMA_VERSION!r}; the file was left untouched"
            )
        mode = meta.get("mode")
        if mode != self._mode:
            raise OutboxError(
                f"outbox {self.path} was created in {mode!r} mode but this client runs in "
                f"{self._mode!r} mode (dry-run events must never be sent, nor real ones "
                "withheld); use another outbox_path"
            )
        return True

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        existed = self._check_meta(conn)
        for statement in _SCHEMA:
            conn.execute(statement)
        if not existed:
            defaults = {
                "schema_version": SCHEMA_VERSION,
                "server_url": self.server_url,
                "mode": self._mode,
                "created_at": repr(float(self._clock())),
                "not_before": "0",
                **{f"counter_{name}": "0" for name in COUNTER_NAMES},
            }
            conn.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", defaults.items()
            )
            self._check_meta(conn)  # another process may have created it meanwhile
        for statement in _MIGRATIONS:
            conn.execute(statement)
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value)"
            " VALUES ('removed_count', '0'), ('removed_max_id', '0')"
        )
        # Earlier builds numbered events with AUTOINCREMENT: never hand out one of those ids
        # again (sqlite_sequence exists: the dead table is AUTOINCREMENT).
        conn.execute(
            "UPDATE meta SET value = max(CAST(value AS INTEGER), seq)"
            " FROM sqlite_sequence WHERE key = 'removed_max_id' AND name = 'events'"
        )
        # A safety net in case the count drifted (rows inserted or deleted by hand).
        removed = f"{_SQL_HIGHEST_ID} - (SELECT COUNT(*) FROM events)"  # noqa: S608
        conn.execute(
            f"UPDATE meta SET value = {removed}"  # noqa: S608 - constant fragments only
            f" WHERE key = 'removed_count' AND CAST(value AS INTEGER) != {removed}"
        )
        row = conn.execute("SELECT value FROM meta WHERE key = 'server_url'").fetchone()
        if row is not None:
            self.server_url = row[0]

    def _move_aside(self) -> pathlib.Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock()))
        base = f"{self.path.name}.corrupt-{stamp}"
        aside = self.path.with_name(base)
        for n in itertools.count(1):
            if not aside.exists():
                break
            aside = self.path.with_name(f"{base}-{n}")
        try:
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                side = pathlib.Path(f"{self.path}{suffix}")
                if side.exists():
                    os.replace(side, f"{aside}{suffix}")
        except OSError as exc:
            raise OutboxError(
                f"outbox {self.path} is corrupt and could not be moved aside: {exc}"
            ) from exc
        return aside

    # --- connections and transactions ----------------------------------------------------
    def _connection(self, fast: bool) -> sqlite3.Connection:
        """This thread's connection for this pid (opened on first use, and after a fork)."""
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed")
        local = self._local
        key = (os.getpid(), _CONNECTIONS.generation)
        if getattr(local, "key", None) != key:
            # First use in this thread, or after a fork: the old connections (if any) stay
            # referenced by _CONNECTIONS; they are never closed from a forked child.
            local.key = key
            local.fast = None
            local.main = None
        conn: sqlite3.Connection | None = local.fast if fast else local.main
        if conn is None:
            conn = self._connect(fast)
            if fast:
                local.fast = conn
            else:
                local.main = conn
        return conn

    def _connect(self, fast: bool) -> sqlite3.Connection:
        busy_ms = 0 if fast else self._busy_timeout_ms  # add() waits by itself: _insert()
        # mode=rw: never create the file here. If it was deleted, a plain connect would make an
        # empty one (0644, no tables) in its place; ensure_file() recreates it properly.
        conn = sqlite3.connect(
            self.path.as_uri() + "?mode=rw",
            timeout=busy_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
            uri=True,
        )
        try:
            _apply_pragmas(
                conn,
                busy_timeout_ms=busy_ms,
                synchronous=self._synchronous,
                wal_autocheckpoint=_ADD_WAL_AUTOCHECKPOINT if fast else _MAIN_WAL_AUTOCHECKPOINT,
            )
        except BaseException:
            _close_quietly([conn])
            raise
        _CONNECTIONS.register(self._serial, conn)
        return conn

    @contextlib.contextmanager
    def _read(self, op: str) -> Iterator[sqlite3.Connection]:
        _CONNECTIONS.enter()
        try:
            yield self._connection(fast=False)
        except sqlite3.Error as exc:
            raise _map_error(exc, op, self.path) from exc
        finally:
            _CONNECTIONS.exit()

    def _lock_for_writing(self, op: str, fast: bool) -> threading.Lock:
        """Take this process's write lock of the file (threads queue here, not in SQLite)."""
        lock = _CONNECTIONS.write_lock(self._lock_key)
        if lock.acquire(blocking=False):  # the usual case, and 3x cheaper than a timed wait
            return lock
        if fast:
            timeout_ms = max(self._add_busy_timeout_ms, _ADD_THREAD_WAIT_MS)
        else:
            timeout_ms = self._busy_timeout_ms
        if not lock.acquire(timeout=timeout_ms / 1000):
            raise OutboxBusyError(
                f"{op}: outbox {self.path} is locked by another thread of this process "
                f"for more than {timeout_ms} ms"
            )
        return lock

    @contextlib.contextmanager
    def _write(self, op: str, *, fast: bool = False) -> Iterator[sqlite3.Connection]:
        _CONNECTIONS.enter()
        try:
            lock = self._lock_for_writing(op, fast)
            try:
                conn = self._connection(fast)
                with _transaction(conn):
                    yield conn
            finally:
                lock.release()
        except sqlite3.Error as exc:
            raise _map_error(exc, op, self.path) from exc
        finally:
            _CONNECTIONS.exit()

    # --- the hot path ----------------------------------------------------------------------
    def add(self, event_id: str, body: str) -> tuple[bool, int]:
        """Insert one event (autocommit, short busy timeout); ``(inserted, evicted)``.

        An existing ``event_id`` is a no-op ``(False, 0)``. Raises :class:`OutboxBusyError`
        when another writer holds the lock longer than ``add_busy_timeout_ms``. Threads of
        one process queue on a Python lock first, so only another process can cause that.
        """
        now = self._clock()
        evicted = 0
        _CONNECTIONS.enter()
        try:
            lock = self._lock_for_writing("add", fast=True)
            try:
                conn = self._connection(fast=True)
                cursor = self._insert(conn, (event_id, body, now))
                if cursor.rowcount != 1:
                    return False, 0
                # Ids are consecutive, so this id minus the rows ever removed is the pending
                # count. The removed count cached here only lags behind, so this is an upper
                # bound: the exact check (one more transaction) runs only when it is over.
                if (cursor.lastrowid or 0) - self._removed_seen > self._max_pending:
                    evicted = self._evict_now(conn)
            finally:
                lock.release()
        except sqlite3.Error as exc:
            raise _map_error(exc, "add", self.path) from exc
        finally:
            _CONNECTIONS.exit()
        self._log_eviction(evicted)
        return True, evicted

    def _insert(self, conn: sqlite3.Connection, row: tuple[str, str, float]) -> sqlite3.Cursor:
        """``_SQL_ADD``, tried again every ``_ADD_RETRY_SECONDS`` while another process holds
        the write lock, for at most ``add_busy_timeout_ms``; then the busy error goes up."""
        deadline = 0.0
        while True:
            try:
                return conn.execute(_SQL_ADD, row)
            except sqlite3.OperationalError as exc:
                now = time.monotonic()
                if not _is_busy(exc) or (deadline and now >= deadline):
                    raise
                deadline = deadline or now + self._add_busy_timeout_ms / 1000
                time.sleep(_ADD_RETRY_SECONDS)

    def _evict_now(self, conn: sqlite3.Connection) -> int:
        """Evict in a transaction of its own; 0 if locked (the event is stored, the next
        add() or add_many() evicts)."""
        try:
            with _transaction(conn):
                evicted = self._evict(conn)
            self._removed_seen = int(conn.execute(_SQL_REMOVED).fetchone()[0])  # committed
        except sqlite3.Error as exc:
            if _is_busy(exc):
                return 0
            raise
        return evicted

    def add_many(self, items: Sequence[tuple[str, str]]) -> tuple[int, int]:
        """Insert events in one transaction with the patient timeout; ``(inserted, evicted)``."""
        if not items:
            return 0, 0
        now = self._clock()
        with self._write("add_many") as conn:
            cursor = conn.executemany(_SQL_ADD, ((eid, body, now) for eid, body in items))
            inserted = max(cursor.rowcount, 0)
            evicted = self._evict(conn)
        self._log_eviction(evicted)
        return inserted, evicted

    def _evict(self, conn: sqlite3.Connection) -> int:
        """Inside a write transaction: delete the oldest rows beyond max_pending, counted."""
        excess = int(conn.execute(_SQL_PENDING).fetchone()[0]) - self._max_pending
        if excess <= 0:
            return 0
        evicted = _delete_events(conn, _SQL_EVICT, (excess,))
        _bump(conn, "evicted", evicted)
        return evicted

    def _log_eviction(self, evicted: int) -> None:
        if evicted:
            _eviction_log.warning(
                f"evicted:{self.path}",
                "outbox %s is full (max_pending=%d): evicted the %d oldest event(s)",
                self.path,
                self._max_pending,
                evicted,
            )

    # --- leases -----------------------------------------------------------------------------
    def claim(self, owner: LeaseOwner, limit: int, lease_seconds: float) -> list[ClaimedRow]:
        """Lease up to ``limit`` eligible rows, oldest first, to ``owner``."""
        if limit <= 0:
            return []
        now = self._clock()
        params = (owner.token, owner.host, owner.pid, now + lease_seconds, now, now, limit)
        with self._write("claim") as conn:
            rows = conn.execute(_SQL_CLAIM, params).fetchall()
        return sorted((ClaimedRow(*row) for row in rows), key=lambda r: r.row_id)

    def renew(self, owner: LeaseOwner, row_ids: Sequence[int], lease_seconds: float) -> list[int]:
        """Extend the leases ``owner`` still holds; returns those row ids."""
        if not row_ids:
            return []
        expires = self._clock() + lease_seconds
        with self._write("renew") as conn:
            rows = conn.execute(_SQL_RENEW, (expires, owner.token, _ids_json(row_ids))).fetchall()
        return sorted(r[0] for r in rows)

    def release(
        self, owner: LeaseOwner, row_ids: Sequence[int], *, retry_at: float | None = None
    ) -> None:
        """Clear the leases ``owner`` still holds; with ``retry_at``, not claimable before it."""
        if not row_ids:
            return
        with self._write("release") as conn:
            conn.execute(_SQL_RELEASE, (retry_at, owner.token, _ids_json(row_ids)))

    def ack(
        self,
        delivered: Sequence[int],
        duplicates: Sequence[int] = (),
        *,
        dry_run: Sequence[int] = (),
    ) -> None:
        """Delete rows the server has (or a dry run did not send) and count them."""
        if not delivered and not duplicates and not dry_run:
            return
        groups = (("delivered", delivered), ("duplicates", duplicates), ("dry_run", dry_run))
        with self._write("ack") as conn:
            for name, ids in groups:
                if ids:
                    _bump(conn, name, _delete_events(conn, _SQL_DELETE_IDS, (_ids_json(ids),)))

    def dead_letter(self, rows: Sequence[tuple[int, str, int | None]]) -> int:
        """Move rows to ``dead`` with their reason and HTTP status; returns how many moved."""
        if not rows:
            return 0
        now = self._clock()
        moved = 0
        with self._write("dead_letter") as conn:
            for row_id, reason, status in rows:
                if conn.execute(_SQL_TO_DEAD, (now, reason, status, int(row_id))).rowcount:
                    moved += _delete_events(conn, _SQL_DELETE_IDS, (f"[{int(row_id)}]",))
            _bump(conn, "dead", moved)
        return moved

    def reclaim_orphaned_leases(self, is_alive: Callable[[int], bool] | None = None) -> int:
        """Clear leases held by dead processes of this host; returns how many rows."""
        host = socket.gethostname()
        with self._read("reclaim_orphaned_leases") as conn:
            leases = conn.execute(
                "SELECT DISTINCT lease_owner, lease_pid FROM events"
                " WHERE lease_owner IS NOT NULL AND lease_host = ?",
                (host,),
            ).fetchall()
        orphans = _orphaned_tokens(leases, is_alive or pid_is_alive)
        if not orphans:
            return 0
        with self._write("reclaim_orphaned_leases") as conn:
            return conn.execute(
                "UPDATE events SET lease_owner = NULL, lease_host = NULL, lease_pid = NULL,"
                " lease_expires_at = NULL"
                " WHERE lease_host = ? AND lease_owner IN (SELECT value FROM json_each(?))",
                (host, json.dumps(orphans)),
            ).rowcount

    # --- state --------------------------------------------------------------------------------
    def pending_count(self) -> int:
        """Rows waiting for delivery, leased or not (O(1): a trigger-maintained counter)."""
        with self._read("pending_count") as conn:
            row = conn.execute(_SQL_PENDING).fetchone()
        return int(row[0]) if row else 0

    def leased_count(self) -> int:
        """Rows under a lease that has not expired."""
        with self._read("leased_count") as conn:
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM events"
                    " WHERE lease_owner IS NOT NULL AND lease_expires_at > ?",
                    (self._clock(),),
                ).fetchone()[0]
            )

    def dead_count(self) -> int:
        """Rows in the dead-letter table."""
        with self._read("dead_count") as conn:
            return int(conn.execute("SELECT COUNT(*) FROM dead").fetchone()[0])

    def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest waiting row was tracked, or None when there is none."""
        with self._read("oldest_pending_age") as conn:
            row = conn.execute("SELECT enqueued_at FROM events ORDER BY id LIMIT 1").fetchone()
        return None if row is None else max(0.0, self._clock() - float(row[0]))

    def counters(self) -> dict[str, int]:
        """The persisted counters (at least :data:`COUNTER_NAMES`)."""
        with self._read("counters") as conn:
            rows = conn.execute(
                "SELECT substr(key, 9), value FROM meta WHERE key LIKE 'counter\\_%' ESCAPE '\\'"
            ).fetchall()
        result = dict.fromkeys(COUNTER_NAMES, 0)
        result.update((name, int(value)) for name, value in rows)
        return result

    def bump(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the persisted counter ``name``."""
        _check_name(name)
        with self._write("bump") as conn:
            _bump(conn, name, n)

    def get_not_before(self) -> float:
        """The shared pause: no sending before this epoch second (0 when none)."""
        value = self.get_meta("not_before")
        try:
            return float(value) if value is not None else 0.0
        except ValueError:
            return 0.0

    def set_not_before(self, when: float) -> None:
        """Pause sending for every process sharing the file until ``when``."""
        self.set_meta("not_before", repr(float(when)))

    def get_meta(self, key: str) -> str | None:
        """One value of the ``meta`` table."""
        with self._read("get_meta") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set one value of the ``meta`` table (the identity keys cannot be changed)."""
        if key in _PROTECTED_META:
            raise ValueError(f"meta key {key!r} is managed by the outbox itself")
        with self._write("set_meta") as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def checkpoint(self) -> None:
        """Copy the WAL into the database without waiting for anyone (PASSIVE)."""
        with self._read("checkpoint") as conn:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    # --- a file deleted or replaced while open --------------------------------------------------
    def _identity(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def ensure_file(self) -> int:
        """Recreate the file if it was deleted or replaced while open; returns the rows moved.

        Without this, every write after an ``rm`` of the file (a tmp cleaner, a user freeing
        space) went into the unlinked inode and was lost when the process ended. The worker
        calls it once a cycle: what was written in between is still readable through the old
        connection and moves into the new file, so nothing already tracked is lost.
        """
        if self._closed or self._identity() == self._file_id:
            return 0
        _CONNECTIONS.enter()
        try:
            lock = self._lock_for_writing("ensure_file", fast=False)
            try:
                return self._recreate()
            finally:
                lock.release()
        except sqlite3.Error as exc:
            raise _map_error(exc, "ensure_file", self.path) from exc
        finally:
            _CONNECTIONS.exit()

    def _recreate(self) -> int:
        """Under the write lock: copy every row into a new file at ``path``."""
        current = self._identity()
        if current == self._file_id:
            return 0
        old = _CONNECTIONS.oldest(self._serial)  # opened before the file went away
        if old is None:
            raise OutboxError(f"outbox {self.path} was deleted and no connection to it is left")
        pending = old.execute("SELECT event_id, body, enqueued_at FROM events ORDER BY id")
        pending_rows = pending.fetchall()
        dead_rows = old.execute(
            "SELECT event_id, body, enqueued_at, dead_at, attempts, reason, http_status"
            " FROM dead ORDER BY id"
        ).fetchall()
        meta_rows = old.execute(
            "SELECT key, value FROM meta"
            " WHERE key = 'not_before' OR key LIKE 'counter\\_%' ESCAPE '\\'"
        ).fetchall()
        _CONNECTIONS.retire(self._serial)
        if current is None:  # nobody recreated it yet: a -wal/-shm left here is the old file's
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
        conn = self._open_file()
        try:
            with _transaction(conn):
                conn.executemany(_SQL_ADD, pending_rows)
                conn.executemany(
                    "INSERT OR IGNORE INTO dead (event_id, body, enqueued_at, dead_at, attempts,"
                    " reason, http_status) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    dead_rows,
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta_rows
                )
        finally:
            _close_quietly([conn])  # threads reconnect lazily (retire() moved the generation)
        self._file_id = self._identity()
        self._removed_seen = 0
        logger.warning(
            "outbox %s was deleted or replaced while in use; recreated it and moved %d pending "
            "and %d dead-lettered events into it",
            self.path,
            len(pending_rows),
            len(dead_rows),
        )
        return len(pending_rows) + len(dead_rows)

    # --- predictions cache ----------------------------------------------------------------------
    def save_prediction(self, key: str, body: str, fetched_at: float) -> None:
        """Store one prediction reply (JSON text) under its query key."""
        with self._write("save_prediction") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO predictions (key, body, fetched_at) VALUES (?, ?, ?)",
                (key, body, fetched_at),
            )

    def load_predictions(self) -> list[tuple[str, str, float]]:
        """Every stored prediction as ``(key, body, fetched_at)``."""
        with self._read("load_predictions") as conn:
            rows = conn.execute("SELECT key, body, fetched_at FROM predictions ORDER BY key")
            return [(str(k), str(b), float(f)) for k, b, f in rows.fetchall()]

    # --- inspection and repair ------------------------------------------------------------------
    def list_rows(self, *, dead: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
        """Rows of ``events`` (or ``dead``) oldest first, as dicts keyed by column name."""
        sql = _SQL_LIST_DEAD if dead else _SQL_LIST_EVENTS
        with self._read("list_rows") as conn:
            return _rows_as_dicts(conn.execute(sql, (-1 if limit is None else limit,)))

    def get_row(self, event_id: str) -> dict[str, Any] | None:
        """One event by id, pending or dead, with ``state`` set to "pending" or "dead"."""
        with self._read("get_row") as conn:
            for state, table in (("pending", "events"), ("dead", "dead")):
                rows = _rows_as_dicts(
                    conn.execute(f"SELECT * FROM {table} WHERE event_id = ?", (event_id,))  # noqa: S608
                )
                if rows:
                    return {**rows[0], "state": state}
        return None

    def requeue(self, event_ids: Sequence[str] | None = None) -> int:
        """Move dead rows (all, or these event ids) back to pending with attempts reset."""
        now = self._clock()
        with self._write("requeue") as conn:
            if event_ids is None:
                conn.executemany(_SQL_ADD, conn.execute(_SQL_REQUEUE_ALL, (now,)).fetchall())
                return conn.execute("DELETE FROM dead").rowcount
            ids = json.dumps(list(event_ids))
            conn.executemany(_SQL_ADD, conn.execute(_SQL_REQUEUE_SOME, (now, ids)).fetchall())
            return conn.execute(
                "DELETE FROM dead WHERE event_id IN (SELECT value FROM json_each(?))", (ids,)
            ).rowcount

    def purge(self, *, dead_only: bool) -> int:
        """Delete every dead row (and every pending row unless ``dead_only``); returns count."""
        with self._write("purge") as conn:
            removed = conn.execute("DELETE FROM dead").rowcount
            if not dead_only:
                removed += _delete_events(conn, "DELETE FROM events RETURNING id", ())
        return int(removed)

    def close(self) -> None:
        """Close this outbox's connections in this process; later calls raise OutboxError."""
        self._closed = True
        self._finalizer()


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
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
