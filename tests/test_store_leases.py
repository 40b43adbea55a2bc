"""Tests of leases (``_store/leases.py``): claim, renew, release and reclaiming orphans."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

from mosaic_telemetry._store import ClaimedRow, LeaseOwner

from .store_helpers import (
    HOST,
    LEASE,
    ROOT,
    Factory,
    FakeClock,
    file_of,
    fill,
    owner,
    row_of,
)

pytest_plugins = ["tests.store_fixtures"]


def test_claim_leases_oldest_first_and_counts_attempts(make: Factory) -> None:
    """claim() returns the oldest rows with attempts incremented and marks them leased."""
    outbox = make()
    fill(outbox, 5)
    rows = outbox.claim(owner("a"), 3, LEASE)
    assert [r.event_id for r in rows] == ["e0", "e1", "e2"]
    assert all(isinstance(r, ClaimedRow) and r.attempts == 1 for r in rows)
    assert outbox.leased_count() == 3
    assert outbox.pending_count() == 5
    leased = row_of(outbox, "e0")
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


def far(name: str) -> LeaseOwner:
    """A lease owner on another host: only the wall clock can end its leases."""
    return LeaseOwner(token=name, host="another-host", pid=4242)


def test_a_claim_takes_unleased_rows_only(make: Factory, clock: FakeClock) -> None:
    """However long ago a lease expired, claim() skips the row until reclaiming clears it."""
    outbox = make()
    fill(outbox, 1)
    assert [r.attempts for r in outbox.claim(far("a"), 1, 30)] == [1]
    clock.advance(3600)
    assert outbox.claim(owner("b"), 1, 30) == []
    assert outbox.reclaim_orphaned_leases() == 1
    assert [r.attempts for r in outbox.claim(owner("b"), 1, 30)] == [2]
    assert row_of(outbox, "e0")["lease_owner"] == "b"


def test_a_lease_of_another_host_expires_by_the_wall_clock(make: Factory, clock: FakeClock) -> None:
    """The last resort: another host's lease is cleared once lease_expires_at has passed."""
    outbox = make()
    fill(outbox, 1)
    outbox.claim(far("a"), 1, 30)
    clock.advance(29.9)
    assert outbox.reclaim_orphaned_leases() == 0
    clock.advance(0.1)
    assert outbox.reclaim_orphaned_leases() == 1


def test_renew_extends_only_rows_still_owned(make: Factory, clock: FakeClock) -> None:
    """renew() keeps the owner's leases alive and fails for a row another owner took over."""
    outbox = make()
    fill(outbox, 2)
    rows = outbox.claim(far("a"), 2, 30)
    ids = [r.row_id for r in rows]
    clock.advance(20)
    assert outbox.renew(far("a"), ids, 30) == ids
    clock.advance(20)  # 40 s after the claim: alive only thanks to the renewal
    assert outbox.reclaim_orphaned_leases() == 0
    outbox.release(far("a"), ids[:1])
    taken = outbox.claim(owner("b"), 1, 30)
    assert [r.row_id for r in taken] == ids[:1]
    assert outbox.renew(far("a"), ids, 30) == ids[1:]
    assert outbox.renew(far("a"), [], 30) == []


def test_own_leases_stand_whatever_the_wall_clock_until_the_monotonic_bound(
    open_sqlite: Factory, clock: FakeClock
) -> None:
    """This process's lease survives a wall clock +1 h; its own monotonic clock ends it."""
    monotonic = FakeClock(100.0)
    outbox = open_sqlite(monotonic=monotonic)
    fill(outbox, 2)
    me = outbox.lease_owner()
    outbox.claim(me, 2, 30)
    clock.advance(3600)
    assert outbox.reclaim_orphaned_leases() == 0
    assert outbox.claim(owner("peer"), 2, 30) == []
    monotonic.advance(29)
    assert outbox.reclaim_orphaned_leases() == 0
    monotonic.advance(1)
    assert outbox.reclaim_orphaned_leases() == 2  # a sender that never came back
    assert len(outbox.claim(owner("peer"), 2, 30)) == 2


def test_release_clears_owned_leases_and_respects_retry_at(make: Factory, clock: FakeClock) -> None:
    """release() frees only the owner's rows; retry_at keeps them unclaimable until then."""
    outbox = make()
    fill(outbox, 2)
    a_rows = outbox.claim(owner("a"), 1, LEASE)
    b_rows = outbox.claim(owner("b"), 1, LEASE)
    outbox.release(owner("a"), [a_rows[0].row_id, b_rows[0].row_id], retry_at=clock.now + 30)
    assert row_of(outbox, "e0")["lease_owner"] is None
    assert row_of(outbox, "e0")["next_attempt_at"] == clock.now + 30
    assert row_of(outbox, "e1")["lease_owner"] == "b"  # not a's to release
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
    with sqlite3.connect(file_of(outbox)) as raw:  # as if written by a dead process with our pid
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
        from mosaic_telemetry._store import LeaseOwner, SqliteOutbox
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
