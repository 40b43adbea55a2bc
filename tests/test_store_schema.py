"""Tests of the file format (``_store/schema.py``): its schema; files refused untouched."""

from __future__ import annotations

import pathlib
import sqlite3

import pytest

from mosaic_telemetry._exceptions import OutboxError
from mosaic_telemetry._store import COUNTER_NAMES

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
