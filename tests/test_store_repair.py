"""Tests of repairs (``_store/repair.py``): requeue, purge, a file recreated after a delete."""

from __future__ import annotations

import logging
import os
import pathlib

import pytest

from .store_helpers import (
    LEASE,
    Factory,
    fill,
    owner,
)

pytest_plugins = ["tests.store_fixtures"]


def test_requeue_moves_dead_rows_back_with_attempts_reset(make: Factory) -> None:
    """requeue() returns dead rows (some or all) to pending, claimable with attempts from 0."""
    outbox = make()
    fill(outbox, 3)
    rows = outbox.claim(owner("a"), 3, LEASE)
    outbox.dead_letter([(r.row_id, "bad", 400) for r in rows])
    assert outbox.requeue(["e1", "unknown"]) == 1
    assert [r["event_id"] for r in outbox.list_rows()] == ["e1"]
    assert outbox.requeue() == 2
    assert outbox.dead_count() == 0
    claimed = outbox.claim(owner("b"), 5, LEASE)
    assert [(r.event_id, r.attempts) for r in claimed] == [("e1", 1), ("e0", 1), ("e2", 1)]


def test_purge(make: Factory) -> None:
    """purge(dead_only=True) empties the dead table; purge(dead_only=False) empties both."""
    outbox = make()
    fill(outbox, 3)
    outbox.dead_letter([(outbox.list_rows()[0]["id"], "bad", 400)])
    assert outbox.purge(dead_only=True) == 1
    assert (outbox.pending_count(), outbox.dead_count()) == (2, 0)
    outbox.dead_letter([(outbox.list_rows()[0]["id"], "bad", 400)])
    assert outbox.purge(dead_only=False) == 2
    assert (outbox.pending_count(), outbox.dead_count()) == (0, 0)


def test_a_deleted_file_is_recreated_with_every_row_and_counter(
    open_sqlite: Factory, db_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ensure_file() moves pending and dead rows, written before and after an rm, to a new file."""
    outbox = open_sqlite()
    fill(outbox, 3)
    outbox.dead_letter([(1, "bad", 422)])
    outbox.ack([2])
    os.unlink(db_path)
    fill(outbox, 2, prefix="after")  # lands in the unlinked file until ensure_file()
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        assert outbox.ensure_file() == 4
        assert outbox.ensure_file() == 0  # once
    assert db_path.exists()
    fresh = open_sqlite()
    assert [r["event_id"] for r in fresh.list_rows()] == ["e2", "after0", "after1"]
    assert [r["event_id"] for r in fresh.list_rows(dead=True)] == ["e0"]
    assert (fresh.counters()["delivered"], fresh.counters()["dead"]) == (1, 1)
    assert outbox.add("later", "{}") == (True, 0)  # the old instance writes the new file
    assert fresh.pending_count() == 4
    assert len([r for r in caplog.records if "deleted or replaced" in r.getMessage()]) == 1


def test_a_successor_another_outbox_made_first_is_merged_into_never_moved_aside(
    open_sqlite: Factory, db_path: pathlib.Path
) -> None:
    """The file and its side files are deleted; another outbox (a process that noticed first)
    has made the new file already, its tables still only in its -wal. The first outbox merges
    its rows into that file: it neither moves the other's live -wal aside nor takes the file
    for a foreign one (both happened in the fork storm, stranding events in .foreign-*)."""
    from mosaic_telemetry._store.files import identity

    first = open_sqlite()
    fill(first, 2)
    for suffix in ("", "-wal", "-shm"):
        os.unlink(f"{db_path}{suffix}")
    second = open_sqlite()
    second.add("theirs", "{}")
    wal = identity(pathlib.Path(f"{db_path}-wal"))
    assert wal is not None
    assert first.ensure_file() == 2
    assert identity(pathlib.Path(f"{db_path}-wal")) == wal  # still the second's, in place
    assert sorted(r["event_id"] for r in second.list_rows()) == ["e0", "e1", "theirs"]
    assert sorted(p.name for p in db_path.parent.iterdir() if ".sqlite3." in p.name) == [
        "outbox.sqlite3.spool"
    ]


def test_a_new_outbox_beside_a_deleted_files_wal_never_overwrites_it(
    open_sqlite: Factory, db_path: pathlib.Path
) -> None:
    """``rm outbox.sqlite3`` (the main file only) while an outbox runs, then another opens
    the path: it moves the old -wal and -shm aside instead of writing over the frames the
    first one still reads, so the first moves all its rows over when it notices."""
    first = open_sqlite()
    fill(first, 3)
    os.unlink(db_path)
    second = open_sqlite()
    assert second.pending_count() == 0  # nothing of the old -wal was replayed into it
    second.add("theirs", "{}")
    assert first.ensure_file() == 3
    assert sorted(r["event_id"] for r in second.list_rows()) == ["e0", "e1", "e2", "theirs"]
    moved = sorted(p.name.split(".stale-")[0] for p in db_path.parent.glob("*.stale-*"))
    assert moved == ["outbox.sqlite3-shm", "outbox.sqlite3-wal"]
