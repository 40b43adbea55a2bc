"""Tests of the memory fallback (``_store/memory.py``): the same outbox on an in-memory database."""

from __future__ import annotations

import threading

import pytest

from mosaic_telemetry._exceptions import OutboxError
from mosaic_telemetry._store import SqliteOutbox

from .store_helpers import (
    LEASE,
    Factory,
    fill,
    owner,
    run_child,
)

pytest_plugins = ["tests.store_fixtures"]


def test_memory_fallback_is_the_same_class_not_durable() -> None:
    """in_memory() is a SqliteOutbox without a path or durability: one implementation."""
    outbox = SqliteOutbox.in_memory()
    assert isinstance(outbox, SqliteOutbox)
    assert (outbox.durable, outbox.path, repr(outbox)) == (False, None, "SqliteOutbox.in_memory()")
    fill(outbox, 2)
    assert outbox.pending_count() == 2
    outbox.close()
    with pytest.raises(OutboxError, match="closed"):
        outbox.add("late", "{}")


def test_memory_outboxes_are_separate() -> None:
    """Two memory outboxes never share rows (each owns its own in-memory database)."""
    first, second = SqliteOutbox.in_memory(), SqliteOutbox.in_memory()
    fill(first, 3)
    assert (first.pending_count(), second.pending_count()) == (3, 0)


def test_threads_share_one_memory_outbox(make: Factory) -> None:
    """Threads adding and claiming at once on one memory outbox lose and duplicate nothing."""
    outbox = SqliteOutbox.in_memory(max_pending=10_000)
    claimed: list[int] = []
    barrier = threading.Barrier(4)

    def work(k: int) -> None:
        barrier.wait()
        for i in range(100):
            outbox.add(f"t{k}-{i}", "{}")
            claimed.extend(r.row_id for r in outbox.claim(owner(f"o{k}"), 3, LEASE))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed.extend(r.row_id for r in outbox.claim(owner("last"), 1000, LEASE))
    assert outbox.pending_count() == 400
    assert sorted(claimed) == list(range(1, 401))


def test_forked_child_starts_with_an_empty_memory_outbox() -> None:
    """A forked child does not resend the parent's in-memory events, and can use its own."""
    outbox = SqliteOutbox.in_memory()
    fill(outbox, 3)

    def child() -> None:
        assert outbox.pending_count() == 0
        assert outbox.add("child", "{}") == (True, 0)

    assert run_child(child) == 0
    assert outbox.pending_count() == 3
