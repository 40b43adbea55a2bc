"""Tests of one outbox file (``_store/database.py``): opening, write locks, busy, errors."""

from __future__ import annotations

import logging
import os
import pathlib
import sqlite3
import threading

import pytest

from mosaic_telemetry._exceptions import OutboxError
from mosaic_telemetry._store import SqliteOutbox
from mosaic_telemetry._store.connections import CONNECTIONS
from mosaic_telemetry._store.files import spool_dir_of

from .store_helpers import (
    Factory,
    FakeClock,
    file_database,
    file_of,
    fill,
)

pytest_plugins = ["tests.store_fixtures"]


def test_rows_survive_reopen(open_sqlite: Factory, clock: FakeClock) -> None:
    """A new SqliteOutbox on the same path sees the rows, bodies and times written before."""
    first = open_sqlite()
    fill(first, 3)
    first.close()
    rows = open_sqlite().list_rows()
    assert [(r["event_id"], r["body"], r["enqueued_at"]) for r in rows] == [
        (f"e{i}", f'{{"id": "e{i}"}}', clock.now) for i in range(3)
    ]


def _spooled(outbox: SqliteOutbox) -> list[str]:
    """Event ids in the outbox's spool files, read straight from the files."""
    assert outbox.path is not None
    ids = []
    for spool in sorted(spool_dir_of(outbox.path).glob("*.sqlite3")):
        with sqlite3.connect(spool) as raw:
            ids += [r[0] for r in raw.execute("SELECT event_id FROM spooled ORDER BY id")]
        raw.close()
    return ids


def test_add_spools_when_another_process_holds_the_lock(open_sqlite: Factory) -> None:
    """With the write lock held elsewhere, add() writes the event to its own spool file."""
    outbox = open_sqlite()
    outbox.add("before", "{}")
    other = sqlite3.connect(file_of(outbox), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        assert outbox.add("blocked", "{}") == (True, 0)
        assert _spooled(outbox) == ["blocked"]  # on disk before add() returned
        assert (outbox.pending_count(), outbox.spooled_count()) == (1, 1)
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert outbox.absorb() == 1
    assert [r["event_id"] for r in outbox.list_rows()] == ["before", "blocked"]
    assert (_spooled(outbox), outbox.spooled_count()) == ([], 0)
    assert outbox.absorb() == 0


def test_add_many_waits_for_the_lock_patiently(open_sqlite: Factory) -> None:
    """add_many() uses the long busy timeout, so a short lock by another writer only delays it."""
    outbox = open_sqlite()
    other = sqlite3.connect(file_of(outbox), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release_soon() -> None:
        released.wait(5)
        other.execute("ROLLBACK")

    thread = threading.Thread(target=release_soon)
    thread.start()
    try:
        assert outbox.add("fast", "{}") == (True, 0)  # spooled: add() never waits long
        released.set()
        assert outbox.add_many([("patient", "{}")]) == (1, 0)
    finally:
        released.set()
        thread.join()
        other.close()
    assert (outbox.pending_count(), outbox.spooled_count()) == (1, 1)


def test_threads_of_one_process_lose_nothing(make: Factory) -> None:
    """Concurrent add() calls from threads all land: in the outbox, or briefly in the spool."""
    outbox = make()
    barrier = threading.Barrier(4)

    def work(k: int) -> None:
        barrier.wait()
        for i in range(50):
            assert outbox.add(f"t{k}-{i}", "{}") == (True, 0)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outbox.pending_count() + outbox.spooled_count() == 200
    outbox.absorb()
    assert (outbox.pending_count(), outbox.spooled_count()) == (200, 0)


def test_add_spools_when_a_thread_of_this_process_holds_the_write_lock(
    open_sqlite: Factory,
) -> None:
    """add() waits only briefly for another thread's write, then writes to the spool."""
    outbox = open_sqlite()
    lock = CONNECTIONS.write_lock(os.path.realpath(file_of(outbox)))
    results: list[tuple[bool, int]] = []
    with lock:
        thread = threading.Thread(target=lambda: results.append(outbox.add("x", "{}")))
        thread.start()
        thread.join(60)
    assert results == [(True, 0)]
    assert _spooled(outbox) == ["x"]
    assert outbox.add("x", "{}") == (True, 0)  # the spool is not the outbox: a new row there
    outbox.absorb()
    assert [r["event_id"] for r in outbox.list_rows()] == ["x"]  # stored once


def test_concurrent_opening_of_a_new_file(db_path: pathlib.Path) -> None:
    """Several instances created at once on a new path all open it and agree on its meta."""
    outboxes: list[SqliteOutbox] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def open_one(k: int) -> None:
        barrier.wait()
        try:
            outboxes.append(SqliteOutbox(db_path, server_url=f"https://s{k}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert len({o.server_url for o in outboxes}) == 1
        for k, outbox in enumerate(outboxes):
            outbox.add(f"e{k}", "{}")
        assert outboxes[0].pending_count() == 6
    finally:
        for outbox in outboxes:
            outbox.close()


@pytest.mark.parametrize(("durability", "level"), [("normal", 1), ("full", 2)])
def test_durability_sets_synchronous(open_sqlite: Factory, durability: str, level: int) -> None:
    """durability "normal" means synchronous=NORMAL and "full" means FULL, on every connection."""
    outbox = open_sqlite(durability=durability)
    database = file_database(outbox)
    for fast in (False, True):
        assert database.connection(fast).execute("PRAGMA synchronous").fetchone() == (level,)
    with pytest.raises(ValueError, match="durability"):
        open_sqlite(durability="sometimes")


def test_sqlite_errors_are_mapped(open_sqlite: Factory) -> None:
    """A failing statement surfaces as OutboxError chained to the sqlite3 error."""
    outbox = open_sqlite()
    raw = sqlite3.connect(file_of(outbox))
    raw.execute("DROP TABLE predictions")
    raw.commit()
    raw.close()
    with pytest.raises(OutboxError, match="load_predictions") as caught:
        outbox.load_predictions()
    assert isinstance(caught.value.__cause__, sqlite3.Error)


def test_closed_outbox_raises(open_sqlite: Factory) -> None:
    """After close() every call raises OutboxError instead of reopening silently."""
    outbox = open_sqlite()
    outbox.close()
    with pytest.raises(OutboxError, match="closed"):
        outbox.add("a", "{}")
    outbox.close()  # idempotent


def test_garbage_file_is_moved_aside_and_recreated(
    open_sqlite: Factory, db_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that is not a database is renamed .corrupt-<time>, replaced, and logged once."""
    db_path.parent.mkdir()
    garbage = b"this is not sqlite at all " * 400
    db_path.write_bytes(garbage)
    with caplog.at_level(logging.ERROR, logger="mosaic_telemetry"):
        outbox = open_sqlite()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].name == "mosaic_telemetry"
    aside = [p for p in db_path.parent.iterdir() if ".corrupt-" in p.name]
    assert [p.name for p in aside] == ["outbox.sqlite3.corrupt-20231114T221320"]
    assert aside[0].read_bytes() == garbage
    message = errors[0].getMessage()
    assert str(db_path) in message and str(aside[0]) in message
    assert outbox.add("fresh", "{}") == (True, 0)


def test_damaged_pages_are_detected_by_quick_check(
    open_sqlite: Factory, db_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database with overwritten pages fails quick_check at open and is moved aside."""
    outbox = open_sqlite()
    outbox.add_many([(f"e{i}", "x" * 500) for i in range(300)])
    outbox.close()
    with db_path.open("r+b") as f:
        f.seek(4096 * 5)
        f.write(b"\xff" * 4096 * 3)
    with caplog.at_level(logging.ERROR, logger="mosaic_telemetry"):
        fresh = open_sqlite()
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert fresh.pending_count() == 0
    assert any(".corrupt-" in p.name for p in db_path.parent.iterdir())


def test_a_second_outbox_on_the_same_file_leaves_the_firsts_locks_alone(
    db_path: pathlib.Path,
) -> None:
    """Opening the path again in this process must not drop the POSIX locks its SQLite
    connections hold (closing any descriptor of the file would): another process's last close
    then took itself for the last connection, deleted the live -wal, and the first outbox
    took its file for lost and moved it aside (seen in the fork-storm test)."""
    import subprocess
    import sys

    first = SqliteOutbox(db_path)
    second: SqliteOutbox | None = None
    try:
        first.add("e1", "{}")
        second = SqliteOutbox(db_path)
        reader = (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
            " c.execute('SELECT COUNT(*) FROM events').fetchall(); c.close()"
        )
        subprocess.run([sys.executable, "-c", reader, str(db_path)], check=True)
        assert os.path.exists(f"{db_path}-wal")
        assert first.ensure_file() == 0
        first.add("e2", "{}")
        assert second.pending_count() == 2
        moved_aside = [p.name for p in db_path.parent.iterdir() if ".stale-" in p.name]
        assert moved_aside == []
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_creation_lock_held_forever_delays_opening_by_the_busy_timeout_only(
    db_path: pathlib.Path,
) -> None:
    """Another process stopped while it held the directory's creation lock: opening goes on
    without the lock after busy_timeout_ms, and works."""
    fcntl = pytest.importorskip("fcntl", reason="the creation lock is a flock (POSIX)")

    db_path.parent.mkdir(mode=0o700)
    fd = os.open(db_path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a separate open file description: it conflicts
        outbox = SqliteOutbox(db_path, busy_timeout_ms=50)
        try:
            assert outbox.add("e", "{}") == (True, 0)
            assert outbox.pending_count() == 1
        finally:
            outbox.close()
    finally:
        os.close(fd)


def test_a_file_system_without_flock_opens_at_once_without_the_creation_lock(
    db_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flock refused outright (EINVAL: some network file systems) is not a lock held by
    another opener: one try, then the outbox opens without it, never waiting busy_timeout."""
    import errno
    import types

    fcntl = pytest.importorskip("fcntl", reason="the creation lock is a flock (POSIX)")
    tries: list[int] = []

    def refuse(fd: int, operation: int) -> None:
        tries.append(operation)
        raise OSError(errno.EINVAL, "flock not supported")

    fake = types.SimpleNamespace(flock=refuse, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB)
    monkeypatch.setattr("mosaic_telemetry._store.files.fcntl", fake)  # not presence's flock
    outbox = SqliteOutbox(db_path, busy_timeout_ms=60_000)
    try:
        assert outbox.add("e", "{}") == (True, 0)
    finally:
        outbox.close()
    assert len(tries) == 1
