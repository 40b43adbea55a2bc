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
    file_database,
    fill,
    owner,
    row_of,
)

pytest_plugins = ["tests.store_fixtures"]


def test_add_then_duplicate_is_a_no_op(make: Factory) -> None:
    """A second add() of the same event_id inserts nothing and evicts nothing."""
    outbox = make()
    assert outbox.add("a", '{"x": 1}') == (True, 0)
    assert outbox.add("a", '{"x": 2}') == (False, 0)
    assert outbox.pending_count() == 1
    assert row_of(outbox, "a")["body"] == '{"x": 1}'


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


def test_eviction_log_lines_carry_the_true_count(
    make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """At most one warning a minute, each with every eviction since the previous line."""
    monotonic = FakeClock(0.0)
    outbox = make(max_pending=2, monotonic=monotonic)
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        fill(outbox, 2)
        for i in range(5):  # 5 evictions: the first is logged at once, 4 are held back
            outbox.add(f"x{i}", "{}")
        monotonic.advance(61)
        outbox.add_many([(f"y{i}", "{}") for i in range(3)])  # 3 more: this line says 7
        outbox.add("z", "{}")  # within the minute again: counted, not logged
        outbox.close()  # close reports what is left
    lines = [r.getMessage() for r in caplog.records if "evicted" in r.getMessage()]
    counts = [int(line.split("evicted ")[1].split()[0]) for line in lines]
    assert counts == [1, 7, 1]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_eviction_never_deletes_a_leased_row(make: Factory) -> None:
    """Rows in flight are skipped: the oldest unleased go, each counted exactly once."""
    outbox = make(max_pending=3)
    fill(outbox, 3)
    in_flight = outbox.claim(owner("sender"), 2, LEASE)
    assert outbox.add_many([("n0", "{}"), ("n1", "{}")]) == (2, 2)
    assert [r["event_id"] for r in outbox.list_rows()] == ["e0", "e1", "n1"]
    outbox.ack([r.row_id for r in in_flight])  # delivered: counted once, never as evicted too
    ledger = outbox.ledger()
    assert (ledger.delivered, ledger.evicted, ledger.pending) == (2, 2, 1)
    assert ledger.balanced


def test_with_every_row_in_flight_the_bound_holds_on_the_unleased_ones(make: Factory) -> None:
    """All rows leased: a new event beyond the bound is the one evicted (the oldest unleased),
    counted; the rows in flight are delivered, never evicted too."""
    outbox = make(max_pending=2)
    fill(outbox, 2)
    rows = outbox.claim(owner("sender"), 2, LEASE)
    assert outbox.add("late", "{}") == (True, 1)
    assert outbox.pending_count() == 2
    outbox.ack([r.row_id for r in rows])
    assert outbox.add("later", "{}") == (True, 0)
    ledger = outbox.ledger()
    assert (ledger.delivered, ledger.evicted, ledger.pending, ledger.balanced) == (2, 1, 1, True)


def test_the_ledger_balances_after_a_burst_with_eviction(open_sqlite: Factory) -> None:
    """A burst past the bound with sends, rejections, requeues and purges: every event has one
    outcome, and the persisted counts hold after a reopen."""
    outbox = open_sqlite(max_pending=100)
    outbox.add_many([(f"a{i}", "{}") for i in range(150)])  # 50 evicted at once
    for i in range(100):
        outbox.add(f"b{i}", "{}")  # 100 more, each evicting one
    batch = outbox.claim(owner("s"), 40, LEASE)
    outbox.ack([r.row_id for r in batch[:30]], [r.row_id for r in batch[30:35]])
    outbox.dead_letter([(r.row_id, "bad", 422) for r in batch[35:]])
    outbox.requeue([batch[35].event_id])
    outbox.add_many([(f"c{i}", "{}") for i in range(20)])
    outbox.purge(dead_only=True)
    ledger = outbox.ledger()
    assert ledger.balanced, ledger
    assert ledger.to_dict() == {
        "tracked": 270,
        "delivered": 30,
        "duplicates": 5,
        "dead": 0,
        "evicted": 150,
        "purged": 4,
        "pending": 81,
        "dry_run": 0,
    }
    outbox.close()
    assert open_sqlite().ledger() == ledger


def test_add_runs_no_count_query(open_sqlite: Factory) -> None:
    """add() counts pending rows from ids and removed_count, never COUNT(*), even evicting."""
    outbox = open_sqlite(max_pending=10)
    outbox.add("warm-up", "{}")
    statements: list[str] = []
    file_database(outbox).connection(fast=True).set_trace_callback(statements.append)
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
        st.tuples(
            st.sampled_from(["add", "ack", "dead", "requeue", "claim", "purge"]), st.integers(0, 7)
        ),
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
                elif op == "purge":
                    outbox.purge(dead_only=n % 2 == 0)
                else:
                    outbox.requeue()
            assert outbox.pending_count() == len(outbox.list_rows()) <= 5
            assert outbox.ledger().balanced
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
