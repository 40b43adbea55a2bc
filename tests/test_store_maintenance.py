"""Tests of the file's upkeep (``_store/maintenance.py``): checkpoints off the track() path,
a WAL that stays within a small disk's budget, and space given back after a drain."""

from __future__ import annotations

import os
import pathlib

import pytest

from mosaic_telemetry._store import maintenance

from .store_helpers import LEASE, Factory, file_database, owner

pytest_plugins = ["tests.store_fixtures"]

BODY = "x" * 1000


def _size(path: pathlib.Path) -> int:
    return sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal") if os.path.exists(f"{path}{s}"))


def test_add_connections_checkpoint_at_4_mib_on_a_roomy_disk(open_sqlite: Factory) -> None:
    """The connection track() writes with checkpoints at 1000 pages, like every other one."""
    outbox = open_sqlite()
    outbox.add("a", "{}")
    fast = file_database(outbox).connection(fast=True)
    main = file_database(outbox).connection()
    assert fast.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
    assert main.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)


def test_on_a_tight_disk_the_wal_stays_within_its_budget(
    open_sqlite: Factory, db_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for only a small WAL, every connection checkpoints at that budget."""
    monkeypatch.setattr(maintenance, "wal_budget", lambda path: 128 * 1024)
    outbox = open_sqlite()
    peak = 0
    for i in range(300):  # about 2.4 MB of WAL unchecked
        outbox.add(f"e{i}", BODY)
        peak = max(peak, maintenance.wal_size(db_path))
    assert peak <= 2 * 128 * 1024
    while rows := outbox.claim(owner("s"), 50, LEASE):  # the sender's transactions too
        outbox.ack([r.row_id for r in rows])
        peak = max(peak, maintenance.wal_size(db_path))
    assert peak <= 2 * 128 * 1024


def test_a_drained_outbox_gives_its_space_back_at_the_next_cycle(
    open_sqlite: Factory, db_path: pathlib.Path
) -> None:
    """After a drain, one maintenance cycle leaves the file at most 10 % of its peak."""
    outbox = open_sqlite(max_pending=100_000)
    for start in range(0, 20_000, 1000):
        outbox.add_many([(f"e{i}", BODY) for i in range(start, start + 1000)])
    outbox.checkpoint()
    peak = _size(db_path)
    assert peak > 20_000_000
    while rows := outbox.claim(owner("s"), 500, LEASE):
        outbox.ack([r.row_id for r in rows])
    assert _size(db_path) > peak // 2  # SQLite keeps free pages by itself
    outbox.checkpoint()  # the worker's cycle
    assert _size(db_path) <= peak // 10
    ledger = outbox.ledger()
    assert (ledger.delivered, ledger.pending, ledger.balanced) == (20_000, 0, True)
    assert outbox.add("after", BODY) == (True, 0)  # ids still never reused
    assert outbox.list_rows()[0]["id"] == 20_001


def test_a_busy_outbox_is_not_vacuumed(open_sqlite: Factory, db_path: pathlib.Path) -> None:
    """While much is still pending, the cycle does not copy the file (the VACUUM would be big)."""
    outbox = open_sqlite(max_pending=100_000)
    for start in range(0, 6000, 1000):
        outbox.add_many([(f"e{i}", BODY) for i in range(start, start + 1000)])
    rows = outbox.claim(owner("s"), 3000, LEASE)
    outbox.ack([r.row_id for r in rows])
    outbox.checkpoint()
    before = os.path.getsize(db_path)
    outbox.checkpoint()
    assert os.path.getsize(db_path) == before
