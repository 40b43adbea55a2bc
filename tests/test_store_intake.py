"""Tests of the intake (``_store/intake.py``): an accepted event is on disk, or counted in memory.

The outbox first; when another writer holds it, this process's spool; when both fail to write,
a bounded memory overflow (counted, logged, not durable). Spools of dead processes are adopted.
"""

from __future__ import annotations

import logging
import os
import pathlib
import sqlite3

import pytest

from mosaic_telemetry._exceptions import OutboxBusyError, OutboxError
from mosaic_telemetry._store import SqliteOutbox, presence
from mosaic_telemetry._store.database import FileDatabase
from mosaic_telemetry._store.files import spool_dir_of
from mosaic_telemetry._store.spool import Spool

from .store_helpers import SPOOLER, ChildProgram, Factory, fill

pytest_plugins = ["tests.store_fixtures"]
pytestmark = pytest.mark.skipif(not presence.AVAILABLE, reason="needs fcntl.flock")

#: Holds the outbox's SQLite write lock from another process until told to let go.
LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
print("released", flush=True)
sys.stdin.readline()
"""


def _spool_ids(path: pathlib.Path) -> list[str]:
    ids = []
    for spool in sorted(spool_dir_of(path).glob("*.sqlite3")):
        with sqlite3.connect(spool) as raw:
            ids += [r[0] for r in raw.execute("SELECT event_id FROM spooled ORDER BY id")]
        raw.close()
    return ids


def test_another_process_holding_the_lock_sends_events_to_the_spool(
    open_sqlite: Factory, db_path: pathlib.Path
) -> None:
    """With a real other process in BEGIN IMMEDIATE, add() returns at once, durably spooled."""
    outbox = open_sqlite(busy_timeout_ms=50)
    fill(outbox, 1)
    locker = ChildProgram(LOCKER, str(db_path))
    assert locker.line() == "locked"
    assert outbox.add("during", "{}") == (True, 0)
    assert _spool_ids(db_path) == ["during"]
    assert outbox.intake_counts().spooled == 1
    with pytest.raises(OutboxBusyError):  # still locked: absorb waits its busy timeout
        outbox.absorb()
    assert _spool_ids(db_path) == ["during"]
    locker.say("go")
    assert locker.line() == "released"
    assert outbox.absorb() == 1
    assert [r["event_id"] for r in outbox.list_rows()] == ["e0", "during"]
    assert _spool_ids(db_path) == []
    locker.say("bye")
    assert locker.finish() == 0


def test_a_spool_is_adopted_after_its_owner_is_sigkilled(
    open_sqlite: Factory, db_path: pathlib.Path
) -> None:
    """Events a killed process had only in its spool are in the outbox of the next opener."""
    open_sqlite().close()
    child = ChildProgram(SPOOLER, str(db_path), "25")
    token, spooled, pending = child.line().split()
    assert (int(spooled), int(pending)) == (25, 0)
    child.kill()
    spool_dir = spool_dir_of(db_path)
    assert {p.name for p in spool_dir.iterdir()} >= {f"{token}.lock", f"{token}.sqlite3"}
    fresh = open_sqlite()  # opening adopts: a restart after kill -9 delivers at once
    assert sorted(r["event_id"] for r in fresh.list_rows()) == sorted(
        f"spooled-{i}" for i in range(25)
    )
    assert not [p for p in spool_dir.iterdir() if p.name.startswith(token)]
    assert fresh.ledger().tracked == 25


def test_a_live_processes_spool_is_never_adopted(
    open_sqlite: Factory, db_path: pathlib.Path
) -> None:
    """While its owner lives, a spool stays where it is, however often others absorb."""
    open_sqlite().close()
    child = ChildProgram(SPOOLER, str(db_path), "3")
    token = child.line().split()[0]
    other = open_sqlite()
    assert other.absorb() == 0
    assert other.pending_count() == 0
    assert (spool_dir_of(db_path) / f"{token}.sqlite3").exists()
    assert child.finish() == 0  # a clean exit: it had no chance to absorb (locked)...
    assert other.absorb() == 3  # ...so its spool is adopted once it is gone
    assert other.pending_count() == 3


def test_absorbing_twice_stores_once(open_sqlite: Factory, db_path: pathlib.Path) -> None:
    """A spool row already in the outbox (a crash between insert and delete) is not duplicated."""
    outbox = open_sqlite()
    outbox.add("a", "{}")
    token = "0" * 32
    spool = Spool(spool_dir_of(db_path) / f"{token}.sqlite3", synchronous="NORMAL")
    spool.add([("a", "{}", 1.0), ("b", "{}", 2.0)])
    spool.close(delete=False)
    assert outbox.absorb() == 1  # an orphan spool (no lock file): adopted
    assert [r["event_id"] for r in outbox.list_rows()] == ["a", "b"]
    assert list(spool_dir_of(db_path).glob("*.sqlite3")) == []


def test_an_unreadable_dead_spool_is_moved_aside(
    open_sqlite: Factory, db_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage where a dead process's spool was: one error, the bytes kept aside, no retry loop."""
    outbox = open_sqlite()
    bad = spool_dir_of(db_path) / f"{'1' * 32}.sqlite3"
    bad.write_bytes(b"not a spool " * 100)
    with caplog.at_level(logging.ERROR, logger="mosaic_telemetry"):
        assert outbox.absorb() == 0
        assert outbox.absorb() == 0
    assert len([r for r in caplog.records if "unreadable" in r.getMessage()]) == 1
    assert [p.name.split(".")[0] for p in spool_dir_of(db_path).glob("*.unreadable-*")] == [
        "1" * 32
    ]


def _failing(monkeypatch: pytest.MonkeyPatch, *, outbox: bool, spool: bool) -> None:
    """Make writes fail as on a full disk: the outbox's (add and transactions), the spool's."""

    def fail(*args: object, **kwargs: object) -> None:
        raise OutboxError("database or disk is full")

    if outbox:
        monkeypatch.setattr(FileDatabase, "add", fail)
        monkeypatch.setattr(FileDatabase, "write", fail)
    if spool:
        monkeypatch.setattr(Spool, "add", fail)


def test_outbox_and_spool_both_failing_hold_events_in_memory_counted(
    open_sqlite: Factory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Disk full for both: events are held (bounded), counted, logged; durable until then False."""
    outbox = open_sqlite(max_pending=3)
    with monkeypatch.context() as patched, caplog.at_level(logging.ERROR, "mosaic_telemetry"):
        _failing(patched, outbox=True, spool=True)
        results = [outbox.add(f"x{i}", "{}") for i in range(5)]
        counts = outbox.intake_counts()
        assert outbox.durable is False
        assert outbox.absorb() == 0  # still failing: kept
    assert results == [(True, 0)] * 3 + [(False, 0)] * 2
    assert (counts.held, counts.lost) == (3, 2)
    messages = [r.getMessage() for r in caplog.records]
    assert any("1 event(s) held in memory" in m for m in messages)
    assert any("1 lost so far" in m for m in messages)  # the next loss is held back...
    with caplog.at_level(logging.WARNING, "mosaic_telemetry"):
        assert outbox.absorb() == 3  # the disk is back: written out
    assert "3 telemetry event(s) held in memory to disk; 0 still held, 2 lost in all" in (
        caplog.records[-1].getMessage()  # ...and the next line has the true count
    )
    assert (outbox.durable, outbox.intake_counts().held) == (True, 0)
    assert [r["event_id"] for r in outbox.list_rows()] == ["x0", "x1", "x2"]


def test_an_outbox_that_fails_to_write_sends_events_to_the_spool(
    open_sqlite: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing outbox write (not a lock): the spool takes the event and it stays durable."""
    outbox = open_sqlite()
    with monkeypatch.context() as patched:
        _failing(patched, outbox=True, spool=False)
        assert outbox.add("a", "{}") == (True, 0)
        assert outbox.durable is True
    assert (outbox.pending_count(), outbox.spooled_count()) == (0, 1)
    outbox.absorb()
    assert (outbox.pending_count(), outbox.spooled_count()) == (1, 0)


def test_closing_while_the_outbox_is_locked_leaves_the_spool_for_the_next_process(
    open_sqlite: Factory, db_path: pathlib.Path
) -> None:
    """A close that cannot move the spool in keeps its files; the next opener adopts them."""
    outbox = open_sqlite(busy_timeout_ms=50)
    locker = ChildProgram(LOCKER, str(db_path))
    assert locker.line() == "locked"
    outbox.add("kept", "{}")
    outbox.close()
    assert _spool_ids(db_path) == ["kept"]
    locker.say("go")
    assert locker.line() == "released"
    assert [r["event_id"] for r in open_sqlite().list_rows()] == ["kept"]
    locker.say("bye")
    assert locker.finish() == 0


def test_a_deleted_spool_moves_its_rows_into_a_new_file(
    open_sqlite: Factory, db_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An rm of the spool directory while events wait in it loses none of them."""
    outbox = open_sqlite()
    with monkeypatch.context() as patched:
        _failing(patched, outbox=True, spool=False)
        outbox.add("before", "{}")
        for path in spool_dir_of(db_path).iterdir():
            os.unlink(path)
        os.rmdir(spool_dir_of(db_path))
        outbox.add("after", "{}")
    assert sorted(_spool_ids(db_path)) == ["after", "before"]
    outbox.ensure_file()  # each cycle: the presence lock file is made again
    assert outbox.path is not None
    assert presence.probe(spool_dir_of(outbox.path), outbox.lease_owner().token) is True
    outbox.absorb()
    assert sorted(r["event_id"] for r in outbox.list_rows()) == ["after", "before"]


def test_the_memory_fallback_has_no_spool(tmp_path: pathlib.Path) -> None:
    """The in-memory outbox never writes a file and never absorbs anything."""
    outbox = SqliteOutbox.in_memory()
    fill(outbox, 2)
    assert (outbox.absorb(), outbox.spooled_count()) == (0, 0)
    assert list(tmp_path.iterdir()) == []
