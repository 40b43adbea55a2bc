"""Tests of one outbox file (``_store/database.py``): opening, write locks, busy, errors."""

from __future__ import annotations

import logging
import os
import pathlib
import sqlite3
import threading
import time

import pytest

from mosaic_telemetry._exceptions import OutboxBusyError, OutboxError
from mosaic_telemetry._store import SqliteOutbox
from mosaic_telemetry._store.connections import CONNECTIONS

from .store_helpers import (
    Factory,
    FakeClock,
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


def test_add_raises_busy_when_another_writer_holds_the_lock(open_sqlite: Factory) -> None:
    """add() gives up after its few-millisecond busy timeout with OutboxBusyError."""
    outbox = open_sqlite()
    outbox.add("before", "{}")
    other = sqlite3.connect(outbox.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(OutboxBusyError, match="locked"):
            outbox.add("blocked", "{}")
        assert time.monotonic() - started < 1.0
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert outbox.add("blocked", "{}") == (True, 0)
    assert outbox.pending_count() == 2


def test_add_many_waits_for_the_lock_patiently(open_sqlite: Factory) -> None:
    """add_many() uses the long busy timeout, so a short lock by another writer only delays it."""
    outbox = open_sqlite()
    other = sqlite3.connect(outbox.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release_soon() -> None:
        released.wait(5)
        other.execute("ROLLBACK")

    thread = threading.Thread(target=release_soon)
    thread.start()
    try:
        with pytest.raises(OutboxBusyError):
            outbox.add("fast", "{}")
        released.set()
        assert outbox.add_many([("patient", "{}")]) == (1, 0)
    finally:
        released.set()
        thread.join()
        other.close()


def test_threads_of_one_process_queue_in_python_not_in_sqlite(make: Factory) -> None:
    """Concurrent add() calls from threads never fail on SQLite's lock: they queue in-process."""
    outbox = make()
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(k: int) -> None:
        barrier.wait()
        for i in range(50):
            try:
                outbox.add(f"t{k}-{i}", "{}")
            except OutboxBusyError as exc:  # pragma: no cover - only on a badly starved host
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [e for e in errors if "another thread" not in str(e)]
    assert outbox.pending_count() == 200 - len(errors)


def test_add_reports_busy_when_a_thread_of_this_process_holds_the_write_lock(
    open_sqlite: Factory,
) -> None:
    """add() waits only briefly for another thread's write and then raises OutboxBusyError."""
    outbox = open_sqlite()
    lock = CONNECTIONS.write_lock(os.path.realpath(outbox.path))
    caught: list[BaseException] = []

    def add_from_thread() -> None:
        try:
            outbox.add("x", "{}")
        except OutboxBusyError as exc:
            caught.append(exc)

    with lock:
        thread = threading.Thread(target=add_from_thread)
        thread.start()
        thread.join(5)
    assert "another thread" in str(caught[0])
    assert outbox.add("x", "{}") == (True, 0)


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
    for fast in (False, True):
        assert outbox._db.connection(fast).execute("PRAGMA synchronous").fetchone() == (level,)
    with pytest.raises(ValueError, match="durability"):
        open_sqlite(durability="sometimes")


def test_sqlite_errors_are_mapped(open_sqlite: Factory) -> None:
    """A failing statement surfaces as OutboxError chained to the sqlite3 error."""
    outbox = open_sqlite()
    raw = sqlite3.connect(outbox.path)
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
