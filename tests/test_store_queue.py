"""Tests of the events queue (``_store/queue.py``): add, evict, ack, dead-letter, counters."""

from __future__ import annotations

import logging
import pathlib
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mosaic_telemetry._store import COUNTER_NAMES, SqliteOutbox

from .store_helpers import (
    LEASE,
    Factory,
    FakeClock,
    fill,
    owner,
)

pytest_plugins = ["tests.store_fixtures"]


def test_add_then_duplicate_is_a_no_op(make: Factory) -> None:
    """A second add() of the same event_id inserts nothing and evicts nothing."""
    outbox = make()
    assert outbox.add("a", '{"x": 1}') == (True, 0)
    assert outbox.add("a", '{"x": 2}') == (False, 0)
    assert outbox.pending_count() == 1
    assert outbox.get_row("a")["body"] == '{"x": 1}'


def test_add_many_counts_inserted_and_skips_duplicates(make: Factory) -> None:
    """add_many() inserts new event ids only and reports how many."""
    outbox = make()
    outbox.add("a", "{}")
    assert outbox.add_many([("a", "{}"), ("b", "{}"), ("c", "{}"), ("b", "{}")]) == (2, 0)
    assert outbox.add_many([]) == (0, 0)
    assert [r["event_id"] for r in outbox.list_rows()] == ["a", "b", "c"]


def test_eviction_drops_oldest_and_counts(make: Factory) -> None:
    """Beyond max_pending the oldest rows go first, and the evicted counter says how many."""
    outbox = make(max_pending=3)
    fill(outbox, 3)
    assert outbox.add("e3", "{}") == (True, 1)
    assert outbox.add("e4", "{}") == (True, 1)
    assert [r["event_id"] for r in outbox.list_rows()] == ["e2", "e3", "e4"]
    assert outbox.add_many([("e5", "{}"), ("e6", "{}")]) == (2, 2)
    assert [r["event_id"] for r in outbox.list_rows()] == ["e4", "e5", "e6"]
    assert outbox.pending_count() == 3
    assert outbox.counters()["evicted"] == 4


def test_eviction_logs_a_rate_limited_warning(
    make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """A full outbox logs a warning on the mosaic_telemetry logger, not one per event."""
    outbox = make(max_pending=2)
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        fill(outbox, 2)
        for i in range(5):
            outbox.add(f"x{i}", "{}")
    warnings = [r for r in caplog.records if "evicted" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert outbox.counters()["evicted"] == 5


def test_add_runs_no_count_query(open_sqlite: Factory) -> None:
    """add() reads the trigger-kept counter instead of COUNT(*), even while evicting."""
    outbox = open_sqlite(max_pending=10)
    outbox.add("warm-up", "{}")
    statements: list[str] = []
    outbox._db.connection(fast=True).set_trace_callback(statements.append)
    for i in range(30):
        assert outbox.add(f"e{i}", "{}")[0]
    assert statements, "the trace callback saw the add() statements"
    assert not [s for s in statements if "count(" in s.lower()]
    assert outbox.pending_count() == 10
    assert len(outbox.list_rows()) == 10


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["add", "ack", "dead", "requeue", "claim"]), st.integers(0, 7)),
        max_size=40,
    )
)
def test_pending_counter_matches_rows(tmp_path: pathlib.Path, ops: list[tuple[str, int]]) -> None:
    """Whatever mix of add/ack/dead_letter/requeue runs, pending_count() equals the row count."""
    path = tmp_path / f"h{time.monotonic_ns()}.sqlite3"
    outbox = SqliteOutbox(path, max_pending=5)
    me = owner("hyp")
    try:
        for op, n in ops:
            if op == "add":
                outbox.add(f"e{n}", "{}")
            elif op == "claim":
                outbox.claim(me, n, LEASE)
            else:
                ids = [r["id"] for r in outbox.list_rows(limit=n)]
                if op == "ack":
                    outbox.ack(ids[: n // 2], ids[n // 2 :])
                elif op == "dead":
                    outbox.dead_letter([(i, "bad", 400) for i in ids])
                else:
                    outbox.requeue()
            assert outbox.pending_count() == len(outbox.list_rows()) <= 5
    finally:
        outbox.close()


def test_ack_deletes_whatever_the_lease_and_counts(make: Factory) -> None:
    """ack() removes delivered and duplicate rows, leased by anyone, and counts each kind."""
    outbox = make()
    fill(outbox, 4)
    rows = outbox.claim(owner("a"), 4, LEASE)
    outbox.ack([rows[0].row_id, rows[1].row_id], [rows[2].row_id])
    outbox.ack([rows[0].row_id])  # already gone: not counted twice
    assert [r["event_id"] for r in outbox.list_rows()] == ["e3"]
    counters = outbox.counters()
    assert (counters["delivered"], counters["duplicates"]) == (2, 1)


def test_dead_letter_moves_rows_with_reason(make: Factory, clock: FakeClock) -> None:
    """dead_letter() moves rows to the dead table with reason, status and attempts."""
    outbox = make()
    fill(outbox, 3)
    rows = outbox.claim(owner("a"), 2, LEASE)
    clock.advance(5)
    moved = outbox.dead_letter([(rows[0].row_id, "bad field", 422), (rows[1].row_id, "x", None)])
    assert moved == 2
    assert outbox.dead_letter([(rows[0].row_id, "again", 422)]) == 0
    assert outbox.pending_count() == 1
    assert outbox.dead_count() == 2
    dead = outbox.list_rows(dead=True)
    columns = ("event_id", "reason", "http_status", "attempts", "dead_at")
    assert {k: dead[0][k] for k in columns} == {
        "event_id": "e0",
        "reason": "bad field",
        "http_status": 422,
        "attempts": 1,
        "dead_at": clock.now,
    }
    assert dead[1]["http_status"] is None
    assert outbox.counters()["dead"] == 2


def test_dead_table_is_bounded_too(make: Factory, caplog: pytest.LogCaptureFixture) -> None:
    """The dead table keeps at most max_pending rows, evicting the oldest, counted and logged."""
    outbox = make(max_pending=2)
    fill(outbox, 2)
    ids = [r["id"] for r in outbox.list_rows()]
    outbox.dead_letter([(i, "bad", 400) for i in ids])
    fill(outbox, 1, prefix="x")
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        outbox.dead_letter([(outbox.list_rows()[0]["id"], "bad", 400)])
    assert [r["event_id"] for r in outbox.list_rows(dead=True)] == ["e1", "x0"]
    assert outbox.counters()["evicted"] == 1
    assert outbox.counters()["dead"] == 3
    assert any("dead-lettered" in r.getMessage() for r in caplog.records)


def test_counters_and_bump(make: Factory) -> None:
    """counters() always reports the standard names; bump() adds to any counter."""
    outbox = make()
    assert outbox.counters() == dict.fromkeys(COUNTER_NAMES, 0)
    outbox.bump("retried")
    outbox.bump("retried", 2)
    outbox.bump("handoff_lost", 5)
    counters = outbox.counters()
    assert (counters["retried"], counters["handoff_lost"]) == (3, 5)
    with pytest.raises(ValueError, match="counter name"):
        outbox.bump("bad name")
