"""Helpers of the store tests (``tests/test_store_*.py``); their fixtures are in
``tests/store_fixtures.py``, loaded with ``pytest_plugins = ["tests.store_fixtures"]``."""

from __future__ import annotations

import os
import pathlib
import socket
from collections.abc import Callable

from mosaic_telemetry._store import LeaseOwner, SqliteOutbox

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
