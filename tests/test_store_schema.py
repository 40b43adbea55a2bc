"""Tests of the file format (``_store/schema.py``): its schema; files refused untouched."""

from __future__ import annotations

import pathlib
import sqlite3

import pytest

from mosaic_telemetry._exceptions import OutboxError
from mosaic_telemetry._store import COUNTER_NAMES
from mosaic_telemetry._store.schema import apply_pragmas

from .store_helpers import (
    Factory,
    file_of,
    file_state,
)

pytest_plugins = ["tests.store_fixtures"]


def test_file_is_plain_sqlite_with_the_documented_schema(open_sqlite: Factory) -> None:
    """The sqlite3 module reads events as JSON text and meta as documented."""
    outbox = open_sqlite(server_url="https://t.example")
    outbox.add("a", '{"k": "v"}')
    raw = sqlite3.connect(file_of(outbox))
    try:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"events", "dead", "meta", "predictions"} <= tables
        assert raw.execute("SELECT body FROM events").fetchall() == [('{"k": "v"}',)]
        meta = dict(raw.execute("SELECT key, value FROM meta"))
        assert (meta["schema_version"], meta["mode"], meta["server_url"]) == (
            "1",
            "real",
            "https://t.example",
        )
        assert {f"counter_{n}" for n in COUNTER_NAMES} <= set(meta)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        raw.close()


def test_other_schema_version_is_refused_untouched(
    open_sqlite: Factory, db_path: pathlib.Path
) -> None:
    """A file with another schema_version raises OutboxError naming both and is not modified."""
    db_path.parent.mkdir()
    raw = sqlite3.connect(db_path)
    raw.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    raw.execute("INSERT INTO meta VALUES ('schema_version', '2'), ('mode', 'real')")
    raw.commit()
    raw.close()
    before = file_state(db_path)
    with pytest.raises(OutboxError, match=r"'2'.*'1'"):
        open_sqlite()
    assert file_state(db_path) == before


@pytest.mark.parametrize("created_dry_run", [True, False])
def test_dry_run_mismatch_is_refused_untouched(
    open_sqlite: Factory, db_path: pathlib.Path, created_dry_run: bool
) -> None:
    """A dry-run file refuses a real client and a real file a dry-run one, unmodified."""
    open_sqlite(dry_run=created_dry_run).close()
    before = file_state(db_path)
    with pytest.raises(OutboxError, match="dry_run"):
        open_sqlite(dry_run=not created_dry_run)
    assert file_state(db_path) == before
    assert open_sqlite(dry_run=created_dry_run).pending_count() == 0


@pytest.mark.parametrize(
    "table", ["invoices (id INTEGER)", "meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"]
)
def test_foreign_database_is_refused_untouched(
    open_sqlite: Factory, db_path: pathlib.Path, table: str
) -> None:
    """An SQLite file of some other application (even one with a meta table) is left alone."""
    db_path.parent.mkdir()
    raw = sqlite3.connect(db_path)
    raw.execute(f"CREATE TABLE {table}")
    raw.commit()
    raw.close()
    before = file_state(db_path)
    with pytest.raises(OutboxError, match="not a mosaic_telemetry outbox"):
        open_sqlite()
    assert file_state(db_path) == before


def _read_locked_rollback_file(tmp_path: pathlib.Path) -> tuple[pathlib.Path, sqlite3.Connection]:
    """A new (rollback-journal) file and a connection holding a read lock on it."""
    path = tmp_path / "new.sqlite3"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("CREATE TABLE t (x)")
    setup.close()
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM t").fetchall()
    return path, reader


def test_the_switch_to_wal_waits_for_a_lock_sqlite_does_not_wait_for(
    tmp_path: pathlib.Path,
) -> None:
    """SQLite answers "locked" at once to a WAL switch while another holds a read lock: the
    pragma is tried again after a pause, and goes through once the lock is gone."""
    path, reader = _read_locked_rollback_file(tmp_path)
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            reader.execute("COMMIT")

    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        apply_pragmas(
            conn,
            busy_timeout_ms=5000,
            synchronous="NORMAL",
            wal_autocheckpoint=1000,
            clock=lambda: 0.0,
            sleep=sleep,
        )
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert pauses == [0.001, 0.002]
    finally:
        conn.close()
        reader.close()


def test_a_lock_that_stays_is_a_busy_error_after_the_busy_timeout(tmp_path: pathlib.Path) -> None:
    """No hang: with the lock never released the busy error goes up once busy_timeout_ms of
    the (injected) clock have passed, the pauses capped at 50 ms."""
    path, reader = _read_locked_rollback_file(tmp_path)
    now = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            apply_pragmas(
                conn,
                busy_timeout_ms=1000,
                synchronous="NORMAL",
                wal_autocheckpoint=1000,
                clock=lambda: now[0],
                sleep=sleep,
            )
        assert 1.0 <= now[0] < 1.05
        assert max(pauses) == 0.05
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    finally:
        conn.close()
        reader.close()
