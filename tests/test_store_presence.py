"""Tests of presence (``_store/presence.py``): a lock held for life tells peers who is alive."""

from __future__ import annotations

import os
import pathlib
import signal
import sqlite3
import sys

import pytest

from mosaic_telemetry._store import SqliteOutbox, presence
from mosaic_telemetry._store.files import spool_dir_of
from mosaic_telemetry._store.presence import Presence, lock_path, probe

from .store_helpers import LEASE, ChildProgram, Factory, fill

pytest_plugins = ["tests.store_fixtures"]
pytestmark = pytest.mark.skipif(not presence.AVAILABLE, reason="needs fcntl.flock")

#: A child that opens the outbox, claims rows as its presence, reports and waits for stdin.
HOLDER = """
import sys
from mosaic_telemetry._store import SqliteOutbox
outbox = SqliteOutbox(sys.argv[1])
owner = outbox.lease_owner()
rows = outbox.claim(owner, int(sys.argv[2]), 3600)
print(owner.token, owner.pid, len(rows), flush=True)
sys.stdin.readline()
"""


def test_a_live_presence_is_alive_and_a_killed_one_dead(db_path: pathlib.Path) -> None:
    """Another process's lock is refused while it lives and granted once it was SIGKILLed."""
    SqliteOutbox(db_path).close()
    child = ChildProgram(HOLDER, str(db_path), "0")
    token = child.line().split()[0]
    spool_dir = spool_dir_of(db_path)
    assert probe(spool_dir, token) is True
    child.kill()
    assert child.process.returncode == -signal.SIGKILL
    assert lock_path(spool_dir, token).exists()  # a kill -9 leaves the file, not the lock
    assert probe(spool_dir, token) is False
    assert probe(spool_dir, "no-such-token") is None


def test_the_lock_file_appears_already_locked(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock is taken on a temporary name before it is renamed into place: never a window."""
    seen: list[bool] = []
    real_rename = os.rename

    def checking_rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(presence.unlocked(pathlib.Path(src)))
        real_rename(src, dst)

    monkeypatch.setattr("mosaic_telemetry._store.presence.os.rename", checking_rename)
    mine = Presence(tmp_path / "spool")
    mine.acquire()
    assert seen == [False]
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == [f"{mine.token}.lock"]
    mine.release()
    assert not (tmp_path / "spool").exists()  # the empty directory goes too


def test_own_tokens_are_never_probed(open_sqlite: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's presence is known alive without opening its lock file a second time."""
    outbox = open_sqlite()
    token = outbox.lease_owner().token
    opened: list[str] = []
    real_open = os.open

    def recording_open(path: str | os.PathLike[str], *args: int) -> int:
        opened.append(os.fspath(path))
        return real_open(path, *args)

    monkeypatch.setattr("mosaic_telemetry._store.presence.os.open", recording_open)
    assert outbox.path is not None
    assert probe(spool_dir_of(outbox.path), token) is True
    assert opened == []


def test_pid_reuse_cannot_fake_liveness(open_sqlite: Factory, db_path: pathlib.Path) -> None:
    """A dead owner's lease naming a live pid is cleared; a live owner naming a dead pid stays."""
    outbox = open_sqlite()
    fill(outbox, 4)
    alive = ChildProgram(HOLDER, str(db_path), "2")
    alive_token = alive.line().split()[0]
    dead = ChildProgram(HOLDER, str(db_path), "2")
    dead_token = dead.line().split()[0]
    dead.kill()
    with sqlite3.connect(db_path) as raw:  # as if the pids had been reused / had died
        raw.execute("UPDATE events SET lease_pid = 1 WHERE lease_owner = ?", (dead_token,))
        raw.execute("UPDATE events SET lease_pid = 999999 WHERE lease_owner = ?", (alive_token,))
    raw.close()
    assert outbox.reclaim_orphaned_leases(lambda pid: pid == 1) == 2
    owners = [r["lease_owner"] for r in outbox.list_rows()]
    assert owners == [alive_token, alive_token, None, None]
    assert alive.finish() == 0


def test_a_live_peers_lease_survives_a_peer_whose_clock_is_an_hour_ahead(
    open_sqlite: Factory, db_path: pathlib.Path
) -> None:
    """A peer whose wall clock is +1 h never takes over a live owner's batch; once dead, it does."""
    fill(open_sqlite(), 3)
    holder = ChildProgram(HOLDER, str(db_path), "3")
    assert holder.line().split()[2] == "3"
    import time

    ahead = open_sqlite(clock=lambda: time.time() + 3600)
    assert ahead.reclaim_orphaned_leases() == 0
    assert ahead.claim(ahead.lease_owner(), 10, LEASE) == []
    holder.kill()
    assert ahead.reclaim_orphaned_leases() == 3
    assert len(ahead.claim(ahead.lease_owner(), 10, LEASE)) == 3


FORKER = """
import os, sys, time
from mosaic_telemetry._store import SqliteOutbox
from mosaic_telemetry._store.files import spool_dir_of
from mosaic_telemetry._store.presence import probe
outbox = SqliteOutbox(sys.argv[1])
parent = outbox.lease_owner()
outbox.claim(parent, 2, 3600)
probed_r, probed_w = os.pipe()
pid = os.fork()
if pid == 0:
    before = probe(spool_dir_of(outbox.path), parent.token)
    os.write(probed_w, b"1")
    # Polled, not awaited: getppid() changes only after the kernel closed all the parent's
    # files (its lock among them); the EOF of a pipe could come before the lock is released.
    while os.getppid() == parent.pid:  # until the parent is gone
        time.sleep(0.01)
    after = probe(spool_dir_of(outbox.path), parent.token)
    mine = outbox.lease_owner().token
    print(before, after, outbox.reclaim_orphaned_leases(), mine != parent.token, flush=True)
    os._exit(0)
os.read(probed_r, 1)
print(pid, flush=True)
os._exit(0)  # dies holding its lock: only the inherited descriptor could keep it held
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_closes_the_inherited_presence_so_the_parents_death_shows(
    open_sqlite: Factory, db_path: pathlib.Path
) -> None:
    """The child drops the descriptor it inherited (never LOCK_UN): when the parent dies, the
    child sees it dead and takes its leases back; while it lives, it is alive."""
    fill(open_sqlite(), 2)
    program = ChildProgram(FORKER, str(db_path))
    grandchild = int(program.line())
    assert program.finish() == 0
    assert program.process.stdout is not None
    answer = program.process.stdout.readline().split()
    assert answer == ["True", "False", "2", "True"], answer
    del grandchild


def test_close_removes_the_presence_and_its_empty_directory(
    open_sqlite: Factory, db_path: pathlib.Path
) -> None:
    """A cleanly closed outbox leaves only its file behind."""
    outbox = open_sqlite()
    fill(outbox, 1)
    assert spool_dir_of(db_path).is_dir()
    outbox.close()
    assert sorted(p.name for p in db_path.parent.iterdir()) == [db_path.name]
    assert sys.platform != "win32"
