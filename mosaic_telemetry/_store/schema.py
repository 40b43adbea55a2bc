"""The outbox file format: tables, meta keys, pragmas, DDL, migrations and the shared SQL.

File format (schema_version 1), plain SQLite in WAL mode, readable with ``sqlite3 outbox.sqlite3``::

    events       one row per event waiting for delivery (leased or not)
      id               INTEGER PRIMARY KEY                 delivery order; oldest evicted first;
                                                          never reused (see removed_max_id)
      event_id         TEXT NOT NULL UNIQUE                the event's uuid, the server's dedup key
      body             TEXT NOT NULL                       the event as JSON text
      enqueued_at      REAL NOT NULL                       epoch seconds when tracked
      attempts         INTEGER NOT NULL DEFAULT 0          claims so far
      next_attempt_at  REAL NOT NULL DEFAULT 0             not claimed before this epoch second;
                                                          one more than MAX_ROW_DELAY_SECONDS
                                                          ahead is a clock stepped back: due
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
      not_before_seconds  the length of that pause when it was set: a reader waits at most
                      this long, however far ahead not_before lies (a clock stepped back)
      removed_count   rows ever removed from events (delivered, dead-lettered, evicted, purged)
      removed_max_id  the highest id ever removed from events
      counter_<name>  persisted counters: delivered, duplicates, dead, evicted, purged,
                      requeued, dry_run, retried (the ledger, see below)
      last_error      JSON {"at": epoch seconds, "error": text}: the last background error

    predictions  key TEXT PRIMARY KEY, body TEXT NOT NULL, fetched_at REAL NOT NULL

    index events_leased ON events(lease_expires_at) WHERE lease_owner IS NOT NULL

There are no triggers: every ``DELETE FROM events`` goes through
:func:`~mosaic_telemetry._store.queue.delete_events`, which notes how many rows it removed and
the highest id among them in ``removed_count`` / ``removed_max_id``; opening the file repairs
both should anything else have deleted rows.

Ids are handed out 1, 2, 3, ... by one INSERT: the next id is ``max(max(id), removed_max_id) +
1``. So an id is never reused (an ack by id can never delete a newer event), and the pending
count is ``highest id so far - removed_count``: O(1), no ``COUNT(*)``, and no counter row
written per insert. ``add()`` writes the events row and its event_id index entry, nothing else
(an AUTOINCREMENT sequence row or an insert-trigger counter would each cost one more page in the
WAL per commit, ≈ 8 µs each: see docs/performance.md).

The ledger (:class:`~.state.Ledger`): ``tracked = highest id - counter_requeued`` always equals
``delivered + duplicates + dead (rows in dead now) + evicted + purged + pending + dry_run``.

Beside the file, ``<outbox>.spool/`` (0700) holds per open outbox and process::

    <token>.lock      0600, empty; its owner holds flock(LOCK_EX) on it while the outbox is open
                      (see :mod:`.presence`): refused means alive, granted means dead. The
                      token is also the lease_owner of the rows that process sends.
    <token>.sqlite3   0600, WAL, PRAGMA user_version = 1: that process's spool (see
                      :mod:`.spool`), written only when the outbox was locked or failing:
      spooled   id INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, body TEXT NOT NULL,
                enqueued_at REAL NOT NULL
      moved into events by event_id (absorb); a dead owner's spool is adopted by the next
      process that opens the outbox, then its files are deleted.

Every pragma is in :data:`PRAGMAS`, applied by :func:`apply_pragmas` (the one place); the
validation of an existing file (:func:`check_outbox`) is shared by the writer and the reader.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Final

from .._exceptions import OutboxError
from .errors import is_busy
from .waiting import Patience

__all__ = [
    "COUNTER_NAMES",
    "MAX_ROW_DELAY_SECONDS",
    "META_LAST_ERROR",
    "PROTECTED_META",
    "SCHEMA_VERSION",
    "SYNCHRONOUS",
    "TABLES",
    "ForeignFileError",
    "apply_pragmas",
    "check_outbox",
    "create_schema",
]

SCHEMA_VERSION: Final = "1"
#: The persisted counters ``counters()`` always reports (0 when never bumped).
COUNTER_NAMES: Final = (
    "delivered",
    "duplicates",
    "dead",
    "evicted",
    "purged",
    "requeued",
    "dry_run",
    "retried",
)
#: The tables of the file format (documented above); an outbox file has every one of them.
TABLES: Final = ("events", "dead", "meta", "predictions")
#: The meta key of the last background error a worker reported (read by `mosaic-telemetry`).
META_LAST_ERROR: Final = "last_error"
META_SCHEMA_VERSION: Final = "schema_version"
META_MODE: Final = "mode"
META_SERVER_URL: Final = "server_url"
META_NOT_BEFORE: Final = "not_before"
META_NOT_BEFORE_SECONDS: Final = "not_before_seconds"
#: No row is held back longer than this (the longest backoff delivery sets): a row whose
#: ``next_attempt_at`` lies further ahead was released before the wall clock was stepped back,
#: and is claimable at once instead of frozen until the clock catches up.
MAX_ROW_DELAY_SECONDS: Final = 300.0
COUNTER_PREFIX: Final = "counter_"
#: Meta keys only the outbox itself writes.
PROTECTED_META: Final = frozenset(
    {META_SCHEMA_VERSION, META_MODE, "pending_count", "removed_count", "removed_max_id"}
)

#: Every pragma the outbox sets, in order; :func:`apply_pragmas` is the only place that runs
#: them. busy_timeout comes first because journal_mode may wait for a lock.
PRAGMAS: Final = (
    "PRAGMA busy_timeout = {busy_timeout_ms}",
    "PRAGMA journal_mode = WAL",  # readers never block the writer; persists in the file
    "PRAGMA synchronous = {synchronous}",  # NORMAL: survives a process crash; FULL: power loss
    # Shrink the WAL back to 4 MiB after a checkpoint: the WAL budget of .maintenance.
    "PRAGMA journal_size_limit = 4194304",
    "PRAGMA wal_autocheckpoint = {wal_autocheckpoint}",
    "PRAGMA temp_store = MEMORY",
)
SYNCHRONOUS: Final = {"normal": "NORMAL", "full": "FULL"}
#: add() connections checkpoint (PASSIVE) at 1000 pages (4 MiB), once in about 500 inserts:
#: measured, that costs track() less than a background checkpoint does (issue 15: median
#: 49 -> 37 us, p99 0.35 -> 0.16 ms, and no event spooled because a TRUNCATE held the lock).
#: Other connections run in the background anyway: 1000 pages too. See .maintenance.
ADD_WAL_AUTOCHECKPOINT: Final = 1000
MAIN_WAL_AUTOCHECKPOINT: Final = 1000

DDL: Final = (
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
MIGRATIONS: Final = (
    "DROP TRIGGER IF EXISTS events_count_insert",
    "DROP TRIGGER IF EXISTS events_count_delete",
    "DROP TRIGGER IF EXISTS events_removed",
    "DELETE FROM meta WHERE key = 'pending_count'",
)

# --- SQL shared by the writer and the reader (constant fragments only) -------------------------
#: The highest events id handed out so far (ids are 1, 2, 3, ... and never reused).
SQL_HIGHEST_ID: Final = (
    "max(coalesce((SELECT max(id) FROM events), 0),"
    " coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'removed_max_id'), 0))"
)
SQL_ADD: Final = (
    "INSERT OR IGNORE INTO events (id, event_id, body, enqueued_at)"  # noqa: S608
    f" VALUES ({SQL_HIGHEST_ID} + 1, ?, ?, ?)"
)
SQL_REMOVED: Final = "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'removed_count'"
#: The pending count in O(1): the highest id minus the rows ever removed.
SQL_PENDING: Final = f"SELECT {SQL_HIGHEST_ID} - coalesce(({SQL_REMOVED}), 0)"
SQL_LEASED: Final = (
    "SELECT COUNT(*) FROM events WHERE lease_owner IS NOT NULL AND lease_expires_at > ?"
)
SQL_DEAD_COUNT: Final = "SELECT COUNT(*) FROM dead"
SQL_OLDEST: Final = "SELECT enqueued_at FROM events ORDER BY id LIMIT 1"
SQL_META: Final = "SELECT key, value FROM meta"
SQL_LIST_EVENTS: Final = "SELECT * FROM events ORDER BY id LIMIT ?"
SQL_LIST_DEAD: Final = "SELECT * FROM dead ORDER BY id LIMIT ?"
SQL_GET_EVENT: Final = "SELECT * FROM events WHERE event_id = ?"
SQL_GET_DEAD: Final = "SELECT * FROM dead WHERE event_id = ?"


def apply_pragmas(
    conn: sqlite3.Connection,
    *,
    busy_timeout_ms: int,
    synchronous: str,
    wal_autocheckpoint: int,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Apply :data:`PRAGMAS` to a new connection (the one place pragmas are set).

    Switching a new file to WAL needs an exclusive lock, and SQLite does not call its busy
    handler for that one (several processes opening a new outbox at once got "database is
    locked" at once, 10 of 300 rounds of six threads): a busy pragma is tried again here,
    with growing pauses (:class:`~.waiting.Patience`), until ``busy_timeout_ms`` have passed;
    then the busy error goes up.
    """
    values = {
        "busy_timeout_ms": int(busy_timeout_ms),
        "synchronous": synchronous,
        "wal_autocheckpoint": int(wal_autocheckpoint),
    }
    patience = Patience(busy_timeout_ms / 1000, clock=clock, sleep=sleep)
    for pragma in PRAGMAS:
        while True:
            try:
                conn.execute(pragma.format(**values)).fetchall()
                break
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or not patience.wait():
                    raise


class ForeignFileError(OutboxError):
    """The file is an SQLite database, but not a mosaic_telemetry outbox."""


def check_outbox(
    conn: sqlite3.Connection, path: object, *, mode: str | None = None, complete: bool = False
) -> bool:
    """Whether ``conn`` holds an outbox of our schema (False: an empty database), read-only.

    Raises :class:`ForeignFileError` for another application's database and
    :class:`OutboxError` for another schema version, (with ``mode``) an outbox of the other
    mode, or (with ``complete``) a missing table. The file is never modified here.
    """
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return False
    meta = _identity(conn) if "meta" in tables else None
    if meta is None or META_SCHEMA_VERSION not in meta:
        detail = (
            f"tables: {', '.join(sorted(tables))}"
            if meta is None
            else "no schema_version in its meta table"
        )
        raise ForeignFileError(
            f"{path} is an SQLite database but not a mosaic_telemetry outbox ({detail}); "
            "refusing to touch it"
        )
    version = meta[META_SCHEMA_VERSION]
    if version != SCHEMA_VERSION:
        raise OutboxError(
            f"outbox {path} has schema_version {version!r}, this SDK reads "
            f"schema_version {SCHEMA_VERSION!r}; the file was left untouched"
        )
    if mode is not None and meta.get(META_MODE) != mode:
        raise OutboxError(
            f"outbox {path} was created in {meta.get(META_MODE)!r} mode but this client runs in "
            f"{mode!r} mode (dry-run events must never be sent, nor real ones "
            "withheld); use another outbox_path"
        )
    missing = [t for t in TABLES if t not in tables]
    if complete and missing:
        raise OutboxError(f"outbox {path} lacks the table(s) {', '.join(missing)}")
    return True


def _identity(conn: sqlite3.Connection) -> dict[str, str] | None:
    """schema_version and mode from meta; None when meta has another shape."""
    try:
        rows = conn.execute(
            "SELECT key, value FROM meta WHERE key IN (?, ?)", (META_SCHEMA_VERSION, META_MODE)
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such column" in str(exc):
            return None
        raise
    return {str(k): str(v) for k, v in rows}


def create_schema(conn: sqlite3.Connection, path: object, defaults: Mapping[str, str]) -> str:
    """Inside a write transaction: create what is missing, migrate, repair; the server_url.

    ``defaults`` are the meta values of a new file (schema_version, mode, server_url, ...).
    """
    existed = check_outbox(conn, path, mode=defaults[META_MODE])
    for statement in DDL:
        conn.execute(statement)
    if not existed:
        values = {
            **defaults,
            META_NOT_BEFORE: "0",
            **{f"{COUNTER_PREFIX}{name}": "0" for name in COUNTER_NAMES},
        }
        conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", values.items())
        check_outbox(conn, path, mode=defaults[META_MODE])  # another process may have won
    for statement in MIGRATIONS:
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
    removed = f"{SQL_HIGHEST_ID} - (SELECT COUNT(*) FROM events)"  # noqa: S608
    conn.execute(
        f"UPDATE meta SET value = {removed}"  # noqa: S608 - constant fragments only
        f" WHERE key = 'removed_count' AND CAST(value AS INTEGER) != {removed}"
    )
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (META_SERVER_URL,)).fetchone()
    return "" if row is None else str(row[0])
