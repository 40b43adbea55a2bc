"""Tests of the connection registry (``_store/connections.py``): threads, fork, finalizers."""

from __future__ import annotations

import gc
import os
import pathlib
import sqlite3
import threading
import time
from collections.abc import Iterable

import pytest

from mosaic_telemetry._store import LeaseOwner, SqliteOutbox
from mosaic_telemetry._store.connections import CONNECTIONS, transaction

from .store_helpers import (
    LEASE,
    Factory,
    file_database,
    fill,
    owner,
    run_child,
)

pytest_plugins = ["tests.store_fixtures"]


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


def test_a_finalizer_run_by_a_gc_inside_the_registry_lock_never_deadlocks(
    db_path: pathlib.Path,
) -> None:
    """A dropped outbox collected while this thread holds the registry lock: no hang, closed later.

    A garbage collection can run inside any allocation, also the one write_lock() makes under
    the registry's (non-reentrant) lock; a finalizer that took that lock hung the thread.
    """
    victim = SqliteOutbox(db_path)
    victim.add("a", "{}")
    serial = file_database(victim)._serial
    cycle: list[object] = [victim]
    cycle.append(cycle)  # only a garbage collection frees it now
    del victim, cycle
    done = threading.Event()

    def collect_inside_the_lock() -> None:
        with CONNECTIONS._cond:  # the lock write_lock() and register() hold while allocating
            gc.collect()
        done.set()

    thread = threading.Thread(target=collect_inside_the_lock, daemon=True)
    thread.start()
    assert done.wait(60), "the finalizer blocked on the registry lock it was called inside"
    assert CONNECTIONS.oldest(serial) is not None  # not closed under the lock...
    CONNECTIONS.enter()  # ...but by the next registry call, outside it
    CONNECTIONS.exit()
    assert CONNECTIONS.oldest(serial) is None


def test_transaction_rolls_back_on_any_error(tmp_path: pathlib.Path) -> None:
    """transaction() commits on success and rolls back on an exception, which propagates."""
    conn = sqlite3.connect(tmp_path / "t.sqlite3", isolation_level=None)
    conn.execute("CREATE TABLE t (x INTEGER)")
    with transaction(conn):
        conn.execute("INSERT INTO t VALUES (1)")

    def failing() -> None:
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES (2)")
            raise KeyError("boom")

    with pytest.raises(KeyError):
        failing()
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert not conn.in_transaction
    conn.close()


def test_a_second_forking_thread_waits_until_the_first_has_closed_every_connection(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two threads forking at once: the one that finds nothing left to close must not fork
    before the other has closed what it took. (A child forked while a connection is still
    open inherits SQLite's record of locks it does not hold; its connections then take none,
    and another process's last close deleted the -wal the child wrote to.)"""
    from mosaic_telemetry._store import connections, forklocks

    monkeypatch.setattr(forklocks, "hold", lambda: None)  # SQLite's mutexes: not this test's
    monkeypatch.setattr(forklocks, "release", lambda: None)
    registry = connections.ConnectionRegistry()
    conn = sqlite3.connect(tmp_path / "f.sqlite3", check_same_thread=False)
    registry.register(1, conn)
    order: list[str] = []
    closing, finish = threading.Event(), threading.Event()

    def slow_close(conns: Iterable[sqlite3.Connection]) -> None:
        for c in conns:
            order.append("closing")
            closing.set()
            finish.wait()
            c.close()
            order.append("closed")

    monkeypatch.setattr(connections, "close_quietly", slow_close)

    def fork_prepare(name: str) -> None:
        registry.before_fork()
        order.append(f"{name} may fork")

    first = threading.Thread(target=fork_prepare, args=("first",))
    first.start()
    closing.wait()
    second = threading.Thread(target=fork_prepare, args=("second",))
    second.start()
    # Until the second thread is inside before_fork (blocked, or, wrongly, done already).
    while not order[-1].startswith("second") and not _inside(second, "before_fork"):
        time.sleep(0.001)
    finish.set()
    first.join()
    second.join()
    registry.after_fork_in_parent()
    registry.after_fork_in_parent()
    assert order.index("closed") < order.index("second may fork")


def _inside(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread`` is running ``function`` right now (any frame of its stack)."""
    import sys

    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False
