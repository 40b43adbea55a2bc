"""Tests of the durable outbox (``mosaic_telemetry._outbox``) on real SQLite files."""

from __future__ import annotations

import logging
import os
import pathlib
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mosaic_telemetry._exceptions import OutboxBusyError, OutboxError
from mosaic_telemetry._memory_outbox import MemoryOutbox
from mosaic_telemetry._outbox import (
    COUNTER_NAMES,
    ClaimedRow,
    LeaseOwner,
    SqliteOutbox,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOST = socket.gethostname()
LEASE = 60.0


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Outbox = Any  # SqliteOutbox | MemoryOutbox: both have the same methods
Factory = Callable[..., Outbox]


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock shared by the outboxes of one test."""
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: pathlib.Path) -> pathlib.Path:
    """Where the test's outbox file goes (its directory does not exist yet)."""
    return tmp_path / "state" / "outbox.sqlite3"


@pytest.fixture
def open_sqlite(db_path: pathlib.Path, clock: FakeClock) -> Iterator[Factory]:
    """Open SqliteOutbox instances on the test's file; all are closed at teardown."""
    opened: list[SqliteOutbox] = []

    def factory(path: pathlib.Path | None = None, **kwargs: Any) -> SqliteOutbox:
        kwargs.setdefault("clock", clock)
        outbox = SqliteOutbox(path or db_path, **kwargs)
        opened.append(outbox)
        return outbox

    yield factory
    for outbox in opened:
        outbox.close()


@pytest.fixture(params=["sqlite", "memory"])
def make(request: pytest.FixtureRequest, open_sqlite: Factory, clock: FakeClock) -> Factory:
    """Build an outbox of either kind, for behaviour both must share."""
    if request.param == "sqlite":
        return open_sqlite

    def memory(**kwargs: Any) -> MemoryOutbox:
        kwargs.setdefault("clock", clock)
        return MemoryOutbox(**kwargs)

    return memory


def owner(name: str) -> LeaseOwner:
    """A lease owner of this process with a readable token."""
    return LeaseOwner(token=name, host=HOST, pid=os.getpid())


def fill(outbox: Outbox, n: int, prefix: str = "e") -> list[str]:
    """Add n events and return their event ids."""
    ids = [f"{prefix}{i}" for i in range(n)]
    for event_id in ids:
        assert outbox.add(event_id, f'{{"id": "{event_id}"}}') == (True, 0)
    return ids


def run_child(body: Callable[[], None]) -> int:
    """Run ``body`` in a forked child; return its exit code (0 when body returned)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            body()
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def file_state(path: pathlib.Path) -> tuple[bytes, int, list[str]]:
    """Bytes, mtime and sibling names: enough to tell a file was not modified."""
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(path.parent))


# --- add ------------------------------------------------------------------------------------


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


def test_rows_survive_reopen(open_sqlite: Factory, clock: FakeClock) -> None:
    """A new SqliteOutbox on the same path sees the rows, bodies and times written before."""
    first = open_sqlite()
    fill(first, 3)
    first.close()
    rows = open_sqlite().list_rows()
    assert [(r["event_id"], r["body"], r["enqueued_at"]) for r in rows] == [
        (f"e{i}", f'{{"id": "e{i}"}}', clock.now) for i in range(3)
    ]


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
    outbox._connection(fast=True).set_trace_callback(statements.append)
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
    from mosaic_telemetry._outbox import _CONNECTIONS

    outbox = open_sqlite()
    lock = _CONNECTIONS.write_lock(os.path.realpath(outbox.path))
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


# --- leases ---------------------------------------------------------------------------------


def test_claim_leases_oldest_first_and_counts_attempts(make: Factory) -> None:
    """claim() returns the oldest rows with attempts incremented and marks them leased."""
    outbox = make()
    fill(outbox, 5)
    rows = outbox.claim(owner("a"), 3, LEASE)
    assert [r.event_id for r in rows] == ["e0", "e1", "e2"]
    assert all(isinstance(r, ClaimedRow) and r.attempts == 1 for r in rows)
    assert outbox.leased_count() == 3
    assert outbox.pending_count() == 5
    leased = outbox.get_row("e0")
    assert (leased["lease_owner"], leased["lease_host"], leased["lease_pid"]) == (
        "a",
        HOST,
        os.getpid(),
    )
    assert outbox.claim(owner("a"), 0, LEASE) == []


def test_two_owners_never_claim_the_same_row(make: Factory) -> None:
    """A leased row is invisible to a second owner until the lease ends."""
    outbox = make()
    fill(outbox, 4)
    first = outbox.claim(owner("a"), 3, LEASE)
    second = outbox.claim(owner("b"), 3, LEASE)
    assert [r.event_id for r in second] == ["e3"]
    assert {r.row_id for r in first}.isdisjoint(r.row_id for r in second)
    assert outbox.claim(owner("c"), 10, LEASE) == []


def test_concurrent_claimers_on_one_file_get_disjoint_rows(open_sqlite: Factory) -> None:
    """Threads with their own SqliteOutbox on one file claim every row exactly once."""
    fill(open_sqlite(), 200)
    outboxes = [open_sqlite() for _ in range(4)]
    claimed: list[list[int]] = [[] for _ in outboxes]
    barrier = threading.Barrier(len(outboxes))

    def drain(index: int) -> None:
        me = owner(f"t{index}")
        barrier.wait()
        while rows := outboxes[index].claim(me, 7, LEASE):
            claimed[index].extend(r.row_id for r in rows)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(outboxes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [row_id for rows in claimed for row_id in rows]
    assert len(every) == len(set(every)) == 200


def test_expired_lease_is_claimable_again(make: Factory, clock: FakeClock) -> None:
    """Once lease_expires_at passes, another owner takes the row and attempts grows."""
    outbox = make()
    fill(outbox, 1)
    assert [r.attempts for r in outbox.claim(owner("a"), 1, 30)] == [1]
    clock.advance(29.9)
    assert outbox.claim(owner("b"), 1, 30) == []
    clock.advance(0.1)
    assert [r.attempts for r in outbox.claim(owner("b"), 1, 30)] == [2]
    assert outbox.get_row("e0")["lease_owner"] == "b"


def test_renew_extends_only_rows_still_owned(make: Factory, clock: FakeClock) -> None:
    """renew() keeps the owner's leases alive and fails for a row another owner took over."""
    outbox = make()
    fill(outbox, 2)
    rows = outbox.claim(owner("a"), 2, 30)
    ids = [r.row_id for r in rows]
    clock.advance(20)
    assert outbox.renew(owner("a"), ids, 30) == ids
    clock.advance(20)  # 40 s after the claim: alive only thanks to the renewal
    assert outbox.claim(owner("b"), 2, 30) == []
    clock.advance(30)  # now expired
    taken = outbox.claim(owner("b"), 1, 30)
    assert [r.row_id for r in taken] == ids[:1]
    assert outbox.renew(owner("a"), ids, 30) == ids[1:]
    assert outbox.renew(owner("a"), [], 30) == []


def test_release_clears_owned_leases_and_respects_retry_at(make: Factory, clock: FakeClock) -> None:
    """release() frees only the owner's rows; retry_at keeps them unclaimable until then."""
    outbox = make()
    fill(outbox, 2)
    a_rows = outbox.claim(owner("a"), 1, LEASE)
    b_rows = outbox.claim(owner("b"), 1, LEASE)
    outbox.release(owner("a"), [a_rows[0].row_id, b_rows[0].row_id], retry_at=clock.now + 30)
    assert outbox.get_row("e0")["lease_owner"] is None
    assert outbox.get_row("e0")["next_attempt_at"] == clock.now + 30
    assert outbox.get_row("e1")["lease_owner"] == "b"  # not a's to release
    assert outbox.claim(owner("c"), 5, LEASE) == []
    clock.advance(30)
    assert [r.event_id for r in outbox.claim(owner("c"), 5, LEASE)] == ["e0"]


def test_release_without_retry_at_is_claimable_at_once(make: Factory) -> None:
    """A plain release() hands the row straight back to the queue."""
    outbox = make()
    fill(outbox, 1)
    rows = outbox.claim(owner("a"), 1, LEASE)
    outbox.release(owner("a"), [r.row_id for r in rows])
    assert outbox.leased_count() == 0
    assert [r.attempts for r in outbox.claim(owner("b"), 1, LEASE)] == [2]


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


def test_reclaim_with_injected_liveness(make: Factory) -> None:
    """Leases of dead pids on this host are cleared; live pids, other hosts and ours are kept."""
    outbox = make()
    fill(outbox, 5)
    me = owner("me")
    outbox.claim(me, 1, LEASE)
    outbox.claim(LeaseOwner("dead1", HOST, 999_991), 1, LEASE)
    outbox.claim(LeaseOwner("dead2", HOST, 999_992), 1, LEASE)
    outbox.claim(LeaseOwner("alive", HOST, 999_993), 1, LEASE)
    outbox.claim(LeaseOwner("far", "another-host", 999_991), 1, LEASE)
    asked: list[int] = []

    def is_alive(pid: int) -> bool:
        asked.append(pid)
        return pid == 999_993

    assert outbox.reclaim_orphaned_leases(is_alive) == 2
    assert sorted(asked) == [999_991, 999_992, 999_993]
    owners = [r["lease_owner"] for r in outbox.list_rows()]
    assert owners == ["me", None, None, "alive", "far"]
    assert outbox.reclaim_orphaned_leases(is_alive) == 0


def test_reclaim_lease_of_an_earlier_process_with_our_pid(open_sqlite: Factory) -> None:
    """A lease with our pid but a token this process never built is an orphan (pid reuse)."""
    outbox = open_sqlite()
    fill(outbox, 2)
    outbox.claim(owner("mine"), 1, LEASE)
    outbox.claim(owner("mine"), 1, LEASE)
    with sqlite3.connect(outbox.path) as raw:  # as if written by a dead process with our pid
        raw.execute("UPDATE events SET lease_owner = 'ghost' WHERE event_id = 'e1'")
    raw.close()
    assert outbox.reclaim_orphaned_leases(lambda pid: True) == 1
    assert [r["lease_owner"] for r in outbox.list_rows()] == ["mine", None]


def test_reclaim_leases_of_a_real_child_that_exited(open_sqlite: Factory) -> None:
    """A child process claims rows and exits; the parent reclaims them at once by pid check."""
    outbox = open_sqlite(clock=time.time)
    fill(outbox, 5)
    script = textwrap.dedent(
        """
        import sys
        from mosaic_telemetry._outbox import LeaseOwner, SqliteOutbox
        outbox = SqliteOutbox(sys.argv[1])
        print(len(outbox.claim(LeaseOwner.for_this_process(), 3, 3600)))
        outbox.close()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(outbox.path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "3"
    assert outbox.leased_count() == 3
    assert outbox.claim(owner("parent"), 5, LEASE)[0].event_id == "e3"
    assert outbox.reclaim_orphaned_leases() == 3
    assert [r.event_id for r in outbox.claim(owner("parent"), 5, LEASE)] == ["e0", "e1", "e2"]


def test_default_liveness_keeps_leases_of_live_processes(open_sqlite: Factory) -> None:
    """With the default os.kill check, a lease of a running process (pid 1) is kept."""
    outbox = open_sqlite()
    fill(outbox, 1)
    outbox.claim(LeaseOwner("init", HOST, 1), 1, LEASE)
    assert outbox.reclaim_orphaned_leases() == 0


# --- state, counters, meta ---------------------------------------------------------------------


def test_oldest_pending_age_follows_the_clock(make: Factory, clock: FakeClock) -> None:
    """oldest_pending_age() is None when empty and the oldest row's age otherwise."""
    outbox = make()
    assert outbox.oldest_pending_age() is None
    fill(outbox, 1)
    clock.advance(12.5)
    fill(outbox, 1, prefix="later")
    assert outbox.oldest_pending_age() == pytest.approx(12.5)


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


def test_counters_persist_across_reopen(open_sqlite: Factory) -> None:
    """Counters live in the file, so a new instance (a restart) sees them."""
    first = open_sqlite(max_pending=1)
    fill(first, 1)
    first.add("e1", "{}")
    rows = first.claim(owner("a"), 1, LEASE)
    first.ack([r.row_id for r in rows])
    first.bump("retried", 4)
    first.close()
    counters = open_sqlite().counters()
    assert {k: counters[k] for k in ("delivered", "evicted", "retried")} == {
        "delivered": 1,
        "evicted": 1,
        "retried": 4,
    }


def test_not_before_is_shared_by_instances_on_one_file(open_sqlite: Factory) -> None:
    """set_not_before() on one instance is seen by another process's instance of the file."""
    first, second = open_sqlite(), open_sqlite()
    assert second.get_not_before() == 0.0
    first.set_not_before(1_700_000_123.5)
    assert second.get_not_before() == 1_700_000_123.5


def test_meta_get_set_and_protected_keys(make: Factory) -> None:
    """get_meta/set_meta store text; the identity keys cannot be overwritten."""
    outbox = make(server_url="https://t.example", dry_run=True)
    assert outbox.get_meta("schema_version") == "1"
    assert outbox.get_meta("mode") == "dry_run"
    assert outbox.get_meta("server_url") == "https://t.example"
    assert outbox.get_meta("missing") is None
    outbox.set_meta("note", "hello")
    assert outbox.get_meta("note") == "hello"
    with pytest.raises(ValueError, match="managed"):
        outbox.set_meta("mode", "real")


def test_server_url_first_writer_wins(open_sqlite: Factory) -> None:
    """server_url reports the URL recorded when the file was created, not the caller's."""
    assert open_sqlite(server_url="https://first").server_url == "https://first"
    assert open_sqlite(server_url="https://second").server_url == "https://first"


def test_predictions_save_and_load(make: Factory) -> None:
    """save_prediction() replaces by key and load_predictions() returns them all."""
    outbox = make()
    outbox.save_prediction("k2", '{"b": 1}', 10.0)
    outbox.save_prediction("k1", '{"a": 1}', 11.0)
    outbox.save_prediction("k2", '{"b": 2}', 12.0)
    assert outbox.load_predictions() == [("k1", '{"a": 1}', 11.0), ("k2", '{"b": 2}', 12.0)]


def test_predictions_persist_across_reopen(open_sqlite: Factory) -> None:
    """A prediction saved by one instance is loaded by the next."""
    open_sqlite().save_prediction("k", "{}", 5.0)
    assert open_sqlite().load_predictions() == [("k", "{}", 5.0)]


def test_checkpoint_is_harmless(make: Factory) -> None:
    """checkpoint() can run at any time and keeps the rows."""
    outbox = make()
    fill(outbox, 3)
    outbox.checkpoint()
    assert outbox.pending_count() == 3


# --- inspection and repair ----------------------------------------------------------------------


def test_list_rows_and_get_row(make: Factory) -> None:
    """list_rows() gives column-named dicts oldest first; get_row() adds the state."""
    outbox = make()
    fill(outbox, 3)
    rows = outbox.list_rows(limit=2)
    assert [r["event_id"] for r in rows] == ["e0", "e1"]
    assert set(rows[0]) == {
        "id",
        "event_id",
        "body",
        "enqueued_at",
        "attempts",
        "next_attempt_at",
        "lease_owner",
        "lease_host",
        "lease_pid",
        "lease_expires_at",
    }
    outbox.dead_letter([(rows[0]["id"], "bad", 400)])
    assert outbox.get_row("e1")["state"] == "pending"
    dead = outbox.get_row("e0")
    assert (dead["state"], dead["reason"]) == ("dead", "bad")
    assert set(outbox.list_rows(dead=True)[0]) == {
        "id",
        "event_id",
        "body",
        "enqueued_at",
        "dead_at",
        "attempts",
        "reason",
        "http_status",
    }
    assert outbox.get_row("nope") is None


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


def test_memory_outbox_has_the_sqlite_methods() -> None:
    """MemoryOutbox offers every public method of SqliteOutbox with the same parameters."""
    import inspect

    public = {n for n in dir(SqliteOutbox) if not n.startswith("_")}
    assert public <= set(dir(MemoryOutbox))
    for name in public - {"durable", "path", "server_url"}:
        sqlite_params = list(inspect.signature(getattr(SqliteOutbox, name)).parameters)
        memory_params = list(inspect.signature(getattr(MemoryOutbox, name)).parameters)
        assert sqlite_params == memory_params, name
    assert (SqliteOutbox.durable, MemoryOutbox.durable, MemoryOutbox().path) == (True, False, None)


def test_memory_outbox_bounds_dead_rows_too() -> None:
    """The memory fallback keeps at most max_pending dead rows, counting the ones it drops."""
    outbox = MemoryOutbox(max_pending=2)
    fill(outbox, 2)
    ids = [r["id"] for r in outbox.list_rows()]
    outbox.dead_letter([(i, "bad", 400) for i in ids])
    fill(outbox, 1, prefix="x")
    outbox.dead_letter([(outbox.list_rows()[0]["id"], "bad", 400)])
    assert [r["event_id"] for r in outbox.list_rows(dead=True)] == ["e1", "x0"]
    assert outbox.counters()["evicted"] == 1


# --- the file: creation, permissions, refusal, corruption --------------------------------------


def test_file_and_directory_modes(open_sqlite: Factory, db_path: pathlib.Path) -> None:
    """A new parent directory is 0700, the database and its -wal/-shm are 0600."""
    outbox = open_sqlite()
    fill(outbox, 1)
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    for name in (db_path.name, f"{db_path.name}-wal", f"{db_path.name}-shm"):
        side = db_path.parent / name
        assert side.exists(), name
        assert stat.S_IMODE(side.stat().st_mode) == 0o600, name


def test_file_is_plain_sqlite_with_the_documented_schema(open_sqlite: Factory) -> None:
    """The sqlite3 module reads events as JSON text and meta as documented."""
    outbox = open_sqlite(server_url="https://t.example")
    outbox.add("a", '{"k": "v"}')
    raw = sqlite3.connect(outbox.path)
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


@pytest.mark.parametrize(("durability", "level"), [("normal", 1), ("full", 2)])
def test_durability_sets_synchronous(open_sqlite: Factory, durability: str, level: int) -> None:
    """durability "normal" means synchronous=NORMAL and "full" means FULL, on every connection."""
    outbox = open_sqlite(durability=durability)
    for fast in (False, True):
        assert outbox._connection(fast).execute("PRAGMA synchronous").fetchone() == (level,)
    with pytest.raises(ValueError, match="durability"):
        open_sqlite(durability="sometimes")


def test_path_under_a_regular_file_is_refused(open_sqlite: Factory, tmp_path: pathlib.Path) -> None:
    """A location that cannot be created raises OutboxError naming the path."""
    (tmp_path / "afile").write_text("not a directory")
    path = tmp_path / "afile" / "outbox.sqlite3"
    with pytest.raises(OutboxError, match="afile"):
        open_sqlite(path)
    with pytest.raises(OutboxError, match="afile"):
        open_sqlite(tmp_path / "afile" / "deeper" / "outbox.sqlite3")


def test_path_that_is_a_directory_is_refused(open_sqlite: Factory, tmp_path: pathlib.Path) -> None:
    """A directory where the file should be raises OutboxError naming the path."""
    (tmp_path / "dir.sqlite3").mkdir()
    with pytest.raises(OutboxError, match=r"dir\.sqlite3"):
        open_sqlite(tmp_path / "dir.sqlite3")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0500")
def test_read_only_directory_is_refused(open_sqlite: Factory, tmp_path: pathlib.Path) -> None:
    """A directory without write permission raises OutboxError naming the path."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(OutboxError, match="locked"):
            open_sqlite(locked / "outbox.sqlite3")
    finally:
        locked.chmod(0o700)


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


def test_finished_threads_do_not_leak_connections(open_sqlite: Factory) -> None:
    """Many short-lived threads calling add() leave a bounded number of open files."""
    outbox = open_sqlite()
    outbox.add("warm-up", "{}")
    fds_before = len(os.listdir("/proc/self/fd"))
    for i in range(40):
        thread = threading.Thread(target=outbox.add, args=(f"t{i}", "{}"))
        thread.start()
        thread.join()
    assert len(os.listdir("/proc/self/fd")) - fds_before < 10
    assert outbox.pending_count() == 41


# --- fork -----------------------------------------------------------------------------------------


def test_forked_child_adds_and_claims_on_the_same_file(open_sqlite: Factory) -> None:
    """After os.fork() the child uses the inherited instance (new connections) to add and claim."""
    outbox = open_sqlite(clock=time.time)
    fill(outbox, 2)
    outbox.claim(owner("parent"), 1, LEASE)

    def child() -> None:
        assert outbox.add("from-child", "{}") == (True, 0)
        rows = outbox.claim(LeaseOwner.for_this_process(), 10, LEASE)
        assert [r.event_id for r in rows] == ["e1", "from-child"]
        outbox.ack([r.row_id for r in rows])

    assert run_child(child) == 0
    assert [r["event_id"] for r in outbox.list_rows()] == ["e0"]
    assert outbox.add("parent-again", "{}") == (True, 0)
    assert outbox.counters()["delivered"] == 2


def test_fork_parent_close_keeps_child_writes(open_sqlite: Factory) -> None:
    """The parent closing its connections while a forked child writes loses no child row."""
    outbox = open_sqlite(clock=time.time)
    outbox.add("parent", "{}")
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()

    def child() -> None:
        assert outbox.add("child-1", "{}") == (True, 0)
        os.write(to_parent_w, b"1")
        assert os.read(to_child_r, 1) == b"2"  # the parent has closed all its connections
        assert outbox.add("child-2", "{}") == (True, 0)

    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            child()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    try:
        assert os.read(to_parent_r, 1) == b"1"
        outbox.close()
        os.write(to_child_w, b"2")
    finally:
        _, status = os.waitpid(pid, 0)
        for fd in (to_parent_r, to_parent_w, to_child_r, to_child_w):
            os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    events = [r["event_id"] for r in open_sqlite().list_rows()]
    assert events == ["parent", "child-1", "child-2"]


def test_forked_child_starts_with_an_empty_memory_outbox() -> None:
    """A forked child does not resend the parent's in-memory events, and can use its own."""
    outbox = MemoryOutbox()
    fill(outbox, 3)

    def child() -> None:
        assert outbox.pending_count() == 0
        assert outbox.add("child", "{}") == (True, 0)

    assert run_child(child) == 0
    assert outbox.pending_count() == 3
