"""Helpers of the store tests (``tests/test_store_*.py``); their fixtures are in
``tests/store_fixtures.py``, loaded with ``pytest_plugins = ["tests.store_fixtures"]``."""

from __future__ import annotations

import os
import pathlib
import socket
from collections.abc import Callable
from typing import Any

from mosaic_telemetry._store import LeaseOwner, SqliteOutbox
from mosaic_telemetry._store.database import FileDatabase

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOST = socket.gethostname()
LEASE = 60.0

Factory = Callable[..., SqliteOutbox]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def owner(name: str) -> LeaseOwner:
    """A lease owner of this process with a readable token."""
    return LeaseOwner(token=name, host=HOST, pid=os.getpid())


def fill(outbox: SqliteOutbox, n: int, prefix: str = "e") -> list[str]:
    """Add n events and return their event ids."""
    ids = [f"{prefix}{i}" for i in range(n)]
    for event_id in ids:
        assert outbox.add(event_id, f'{{"id": "{event_id}"}}') == (True, 0)
    return ids


def row_of(outbox: SqliteOutbox, event_id: str) -> dict[str, Any]:
    """``outbox.get_row(event_id)``; the test fails here if the outbox holds no such row."""
    row = outbox.get_row(event_id)
    assert row is not None, f"no row {event_id!r}"
    return row


def file_of(outbox: SqliteOutbox) -> pathlib.Path:
    """The outbox's file; the test fails here if the outbox is an in-memory one."""
    assert outbox.path is not None, "an in-memory outbox has no file"
    return outbox.path


def file_database(outbox: SqliteOutbox) -> FileDatabase:
    """The outbox's file database, for tests that watch its connections."""
    database = outbox._db
    assert isinstance(database, FileDatabase), "an in-memory outbox has no file database"
    return database


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


class ChildProgram:
    """A Python child process running ``script`` with this tree importable; talks by lines."""

    def __init__(self, script: str, *args: str) -> None:
        import subprocess
        import sys
        import textwrap

        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )

    def line(self) -> str:
        """The next line the child printed (its stderr on EOF, to say why)."""
        assert self.process.stdout is not None
        text = self.process.stdout.readline()
        if not text:
            assert self.process.stderr is not None
            raise AssertionError(f"child ended: {self.process.stderr.read()}")
        return text.rstrip("\n")

    def say(self, text: str) -> None:
        """Send one line to the child's stdin."""
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        """SIGKILL the child and reap it."""
        self.process.kill()
        self.process.wait(60)

    def finish(self) -> int:
        """Close stdin and wait for the exit code."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(120)


#: Tracks while the outbox is locked (so into its spool), reports, then waits to be killed.
SPOOLER = """
import sqlite3, sys
from mosaic_telemetry._store import SqliteOutbox
outbox = SqliteOutbox(sys.argv[1])
locker = sqlite3.connect(sys.argv[1], isolation_level=None)
locker.execute("BEGIN IMMEDIATE")
for i in range(int(sys.argv[2])):
    outbox.add(f"spooled-{i}", "{}")
locker.execute("ROLLBACK")
print(outbox.lease_owner().token, outbox.spooled_count(), outbox.pending_count(), flush=True)
sys.stdin.readline()
"""
