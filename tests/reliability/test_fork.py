"""Scenario 4: fork. Tracking around os.fork(), in multiprocessing pools (fork and spawn), and
under a gunicorn-style preloading parent that never sends: every event arrives exactly once.

Each case runs as a program of its own, so the forks happen in a small process rather than in
pytest, and nothing but the SDK is shared between parent and children.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from .conftest import child_program, last_json, run_program

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

AROUND_FORK = """
client.start()
for event in make_events(30):          # a backlog the parent has not sent yet
    client.track(event)
client.flush(timeout=0)                # and a batch in flight (the server delays its reply)
pid = os.fork()
if pid == 0:
    def work():
        for event in make_events(25):
            client.track(event)
    threads = [threading.Thread(target=work) for _ in range(2)]
    [t.start() for t in threads]; [t.join() for t in threads]
    sys.exit(0)                        # a normal exit: atexit stops the child's client
for event in make_events(20):
    client.track(event)
_, status = os.waitpid(pid, 0)
result = client.flush(timeout=60)
client.stop()
print(json.dumps({"child_exit": os.waitstatus_to_exitcode(status), "remaining": result.remaining}))
"""

POOLS = """
import multiprocessing

def work(n):
    for event in make_events(5):
        client.track(event)
    return os.getpid()

if __name__ == "__main__":
    client.start()
    for event in make_events(5):
        client.track(event)
    pids = set()
    for method in ("fork", "spawn"):
        with multiprocessing.get_context(method).Pool(3) as pool:
            pids.update(pool.map(work, range(6)))
    for event in make_events(5):
        client.track(event)
    result = client.flush(timeout=60)
    client.stop()
    print(json.dumps({"children": len(pids), "remaining": result.remaining}))
"""

PRELOAD = """
# The gunicorn --preload shape: the parent builds the client and never starts it; workers are
# forked, serve (track from two threads), and exit the way gunicorn ends them.
children = []
for n in range(3):
    pid = os.fork()
    if pid == 0:
        def serve():
            for event in make_events(10):
                client.track(event)
        threads = [threading.Thread(target=serve) for _ in range(2)]
        [t.start() for t in threads]; [t.join() for t in threads]
        sys.exit(0)
    children.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
print(json.dumps({"codes": codes, "parent_tracked": client.stats()["tracked"],
                  "parent_running": client.is_running}))
"""


def _check_once(server: FakeTelemetryServer, expected: int) -> dict[str, int]:
    ids = [e["event_id"] for e in server.events]
    figures = {
        "stored": len(set(ids)),
        "duplicates_stored": len(ids) - len(set(ids)),
        "duplicates_sent": server.duplicates_received,
    }
    assert figures == {"stored": expected, "duplicates_stored": 0, "duplicates_sent": 0}
    return figures


def test_tracking_around_fork_delivers_every_event_once(
    server: FakeTelemetryServer, outbox_path: Path, report: Callable[..., None]
) -> None:
    """Parent and child track after a fork taken with a backlog and a send in flight: all once."""
    server.script(ScriptedReply(delay=0.5))
    result = last_json(run_program(child_program(server.url, outbox_path, AROUND_FORK)))
    assert result == {"child_exit": 0, "remaining": 0}
    report("fork", case="os.fork with backlog and send in flight", **_check_once(server, 100))


def test_multiprocessing_pools_fork_and_spawn_deliver_every_event_once(
    server: FakeTelemetryServer,
    outbox_path: Path,
    tmp_path: Path,
    report: Callable[..., None],
) -> None:
    """Events tracked in fork and spawn pool workers (ended by terminate()) all arrive once."""
    program = tmp_path / "pools.py"
    program.write_text(child_program(server.url, outbox_path, POOLS))
    result = last_json(
        run_program(f"import runpy; runpy.run_path({str(program)!r}, run_name='__main__')")
    )
    assert result["remaining"] == 0
    report("fork", case="multiprocessing fork + spawn pools", **_check_once(server, 70))


def test_preloading_parent_that_never_sends(
    server: FakeTelemetryServer, outbox_path: Path, report: Callable[..., None]
) -> None:
    """A gunicorn-style parent builds the client and never starts it; its forked workers deliver."""
    result = last_json(run_program(child_program(server.url, outbox_path, PRELOAD)))
    assert result == {"codes": [0, 0, 0], "parent_tracked": 0, "parent_running": False}
    report("fork", case="gunicorn-style preload parent", **_check_once(server, 60))
