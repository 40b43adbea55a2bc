"""Tests of the read-only reader (``_store/reader.py``): it never modifies the file it reads."""

from __future__ import annotations

import json
import os
import pathlib
import re
import sqlite3
from collections.abc import Callable

import pytest

from mosaic_telemetry._exceptions import OutboxError
from mosaic_telemetry._store import META_LAST_ERROR, OutboxReader, SqliteOutbox

from .store_helpers import LEASE, Factory, FakeClock, fill, owner

pytest_plugins = ["tests.store_fixtures"]


def _snapshot(directory: pathlib.Path) -> dict[str, tuple[bytes, int] | None]:
    """Every file of ``directory`` with its bytes and mtime.

    A ``-shm`` is listed without its bytes: a WAL reader takes a read mark in that shared-memory
    lock table while a writer has the file open (it holds no data, and no reader can avoid it).
    """
    return {
        p.name: None if p.name.endswith("-shm") else (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def _every_read(reader: OutboxReader) -> None:
    reader.status()
    reader.meta()
    reader.list_rows()
    reader.list_rows(dead=True, limit=1)
    reader.get_row("e1")
    reader.get_row("nope")
    reader.dead_event_ids(["e0", "e1"])
    reader.count(dead=False)
    reader.count(dead=True)
    reader.quick_check()


def _filled(open_sqlite: Factory, clock: FakeClock) -> SqliteOutbox:
    outbox = open_sqlite()
    fill(outbox, 5)
    outbox.claim(owner("sender"), 2, LEASE)
    outbox.dead_letter([(1, "bad", 422)])
    outbox.ack([2])
    outbox.set_meta(META_LAST_ERROR, json.dumps({"at": clock.now, "error": "boom"}))
    return outbox


@pytest.mark.parametrize("writer_open", [False, True], ids=["closed", "open-by-a-writer"])
def test_reading_leaves_every_byte_as_it_was(
    open_sqlite: Factory, clock: FakeClock, db_path: pathlib.Path, writer_open: bool
) -> None:
    """Every read, of a closed outbox or one a writer holds open, leaves the files identical."""
    outbox = _filled(open_sqlite, clock)
    if not writer_open:
        outbox.close()
    before = _snapshot(db_path.parent)
    _every_read(OutboxReader(db_path, clock=clock))
    assert _snapshot(db_path.parent) == before


def test_status_is_one_consistent_snapshot(
    open_sqlite: Factory, clock: FakeClock, db_path: pathlib.Path
) -> None:
    """status() reports the counts, counters, identity and last error of the file."""
    outbox = _filled(open_sqlite, clock)
    clock.advance(7)
    status = OutboxReader(db_path, clock=clock).status()
    assert (status.pending, status.leased, status.dead) == (3, 0, 1)  # row 2 acked, 1 dead
    assert status.oldest_pending_age_seconds == pytest.approx(7)
    assert (status.schema_version, status.mode) == ("1", "real")
    assert (status.counters["delivered"], status.counters["dead"]) == (1, 1)
    assert (status.last_error, status.last_error_at) == ("boom", clock.now - 7)
    assert status.wal_bytes is not None and status.size_bytes > 0
    assert outbox.pending_count() == status.pending


def test_status_counts_pending_rows_without_scanning_them(
    open_sqlite: Factory, db_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status() and count() use the O(1) pending count, never COUNT(*) over the events table."""
    outbox = open_sqlite(max_pending=50)
    outbox.add_many([(f"e{i}", "{}") for i in range(60)])  # 10 evicted: still exact
    statements: list[str] = []
    real_connect = sqlite3.connect

    def traced(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)  # type: ignore[call-overload]
        conn.set_trace_callback(statements.append)
        return conn  # type: ignore[no-any-return]

    monkeypatch.setattr("mosaic_telemetry._store.reader.sqlite3.connect", traced)
    reader = OutboxReader(db_path)
    assert reader.status().pending == reader.count(dead=False) == 50
    scans = [s for s in statements if re.search(r"count\(\*\)\s+from\s+events\s*$", s, re.I)]
    assert statements and scans == []


def test_a_missing_file_is_an_error_and_is_not_created(tmp_path: pathlib.Path) -> None:
    """A path with no file raises OutboxError naming it, and nothing appears there."""
    path = tmp_path / "none.sqlite3"
    with pytest.raises(OutboxError, match=f"no outbox file at {re.escape(str(path))}"):
        OutboxReader(path).status()
    assert list(tmp_path.iterdir()) == []


def _garbage(path: pathlib.Path) -> None:
    path.write_bytes(b"not sqlite at all " * 300)


def _foreign(path: pathlib.Path) -> None:
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE users (id INTEGER)")
    raw.close()


def _other_version(path: pathlib.Path) -> None:
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        raw.execute("INSERT INTO meta VALUES ('schema_version', '2'), ('mode', 'real')")
    raw.close()


def _empty(path: pathlib.Path) -> None:
    path.write_bytes(b"")


def _incomplete(path: pathlib.Path) -> None:
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        raw.execute("INSERT INTO meta VALUES ('schema_version', '1'), ('mode', 'real')")
    raw.close()


@pytest.mark.parametrize(
    ("make_file", "message"),
    [
        (_garbage, "corrupt or not SQLite"),
        (_foreign, r"not a mosaic_telemetry outbox \(tables: users\)"),
        (_other_version, "schema_version '2', this SDK reads schema_version '1'"),
        (_empty, "is empty: not a mosaic_telemetry outbox"),
        (_incomplete, r"lacks the table\(s\) events, dead, predictions"),
    ],
    ids=["garbage", "foreign", "other-version", "empty", "incomplete"],
)
def test_files_that_are_not_our_outbox_are_refused_untouched(
    tmp_path: pathlib.Path, make_file: Callable[[pathlib.Path], None], message: str
) -> None:
    """Corrupt, foreign, other-version, empty and incomplete files: a clear error, no change."""
    path = tmp_path / "outbox.sqlite3"
    make_file(path)
    before = _snapshot(tmp_path)
    for read in (OutboxReader(path).status, OutboxReader(path).meta, OutboxReader(path).list_rows):
        with pytest.raises(OutboxError, match=message):
            read()
    assert _snapshot(tmp_path) == before


def test_a_directory_is_refused(tmp_path: pathlib.Path) -> None:
    """A directory at the path is an error naming it."""
    with pytest.raises(OutboxError, match="is a directory"):
        OutboxReader(tmp_path).status()


def test_list_rows_marks_live_leases_and_dead_rows(
    open_sqlite: Factory, clock: FakeClock, db_path: pathlib.Path
) -> None:
    """Rows carry state "leased" while their lease runs, "pending" after, "dead" for dead rows."""
    outbox = open_sqlite()
    fill(outbox, 3)
    outbox.claim(owner("a"), 1, 30)
    outbox.dead_letter([(3, "bad", 422)])
    reader = OutboxReader(db_path, clock=clock)
    assert [r["state"] for r in reader.list_rows()] == ["leased", "pending"]
    assert [r["state"] for r in reader.list_rows(dead=True)] == ["dead"]
    assert reader.get_row("e2") == {**reader.list_rows(dead=True)[0]}
    clock.advance(30)
    assert [r["state"] for r in OutboxReader(db_path, clock=clock).list_rows()] == [
        "pending",
        "pending",
    ]
    assert reader.dead_event_ids(["e0", "e2", "zz"]) == {"e2"}


def test_a_file_a_writer_opens_while_it_is_read_immutably_is_read_again(
    open_sqlite: Factory, db_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quiet file that gets a -wal during an immutable read is read again under WAL locks."""
    outbox = open_sqlite()
    fill(outbox, 4)
    outbox.close()
    answers = iter([True, False])  # quiet before the read, a writer's -wal right after
    monkeypatch.setattr(OutboxReader, "_quiet", lambda self: next(answers, False))
    assert OutboxReader(db_path).status().pending == 4
    assert not os.path.exists(f"{db_path}-journal")
