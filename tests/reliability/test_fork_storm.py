"""Scenario 4b: forks from several threads while other threads start workers, track and log.

Every lock the SDK holds (the rate-limited logger's, the stats', the transport's, the outbox
registry's) is renewed in a child, and nothing is imported on a worker thread, so a child forked
at any moment tracks, flushes and exits by itself with an empty stderr. Before these fixes, 9 of
60 children hung (a logger lock held by another thread at the fork) and some died with
``ImportError: partially initialized module`` (the worker imported lazily on its own thread).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mosaic_telemetry.testing import FakeTelemetryServer

from .conftest import child_program, last_json, run_program

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

STORM = """
import logging, random, signal
from mosaic_telemetry import TelemetryClient

class Kept(logging.Handler):            # a handler with a lock and no buffered file: a file's
    def __init__(self):                  # own buffer lock, held at a fork, is Python's hazard
        super().__init__()
        self.records = []
    def emit(self, record):
        self.records.append(self.format(record))
        del self.records[:-100]

sdk_log = logging.getLogger("mosaic_telemetry")
sdk_log.addHandler(Kept())
sdk_log.setLevel(logging.DEBUG)
sdk_log.propagate = False                # stderr is for what goes wrong, not for the SDK's log
stop = threading.Event()
children = []
children_lock = threading.Lock()

def child_main(index):
    err = os.open(os.path.join({errors!r}, f"child-{{index}}.err"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.dup2(err, 2)
    import faulthandler
    faulthandler.dump_traceback_later(140, exit=False)  # a hung child says where it hangs
    for event in make_events(2):
        client.track(event)
    client.track("not an event")         # logs through the rate-limited logger
    client.flush(timeout=20)
    client.stop()
    sys.stderr.flush()
    os._exit(0)

def logger_thread():
    while not stop.is_set():             # the rate-limited logger's lock, taken all the time
        client.track(object())

def starter_thread():
    while not stop.is_set():             # workers starting and stopping all the time
        other = TelemetryClient(config)
        other.start()
        other.track(make_event())
        other.flush(timeout=5)
        other.stop()

def forker_thread(first):
    for index in range(first, {children} , {forkers}):
        if index >= {forkers}:           # the first forks come while the worker starts
            time.sleep(random.uniform(0, 0.02))
        pid = os.fork()
        if pid == 0:
            child_main(index)
        with children_lock:
            children.append(pid)

busy = [threading.Thread(target=f, daemon=True) for f in (logger_thread, starter_thread)]
forkers = [threading.Thread(target=forker_thread, args=(i,)) for i in range({forkers})]
client.start()                           # forks begin while its worker thread starts
[t.start() for t in forkers + busy + [threading.Thread(target=logger_thread, daemon=True)]]
[t.join() for t in forkers]
stop.set()

hung, failed = [], []
deadline = time.monotonic() + 150  # hung, not slow: two loaded cores make children slow
for pid in children:
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.waitstatus_to_exitcode(status) != 0:
                failed.append(pid)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            hung.append(pid)
            break
        time.sleep(0.05)
client.stop()
print(json.dumps({{"children": len(children), "hung": len(hung), "failed": len(failed)}}))
"""


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "children", [pytest.param(30, id="short"), pytest.param(200, id="long", marks=pytest.mark.slow)]
)
def test_children_forked_from_busy_threads_finish_cleanly(
    children: int, tmp_path: Path, report: object
) -> None:
    """Forks from 3 threads while 4 others track, log and start workers: every child exits 0
    on its own, with an empty stderr, and its events reach the server."""
    errors = tmp_path / "errors"
    errors.mkdir()
    with FakeTelemetryServer() as server:
        program = child_program(
            server.url,
            tmp_path / "outbox.sqlite3",
            STORM.format(errors=str(errors), children=children, forkers=3),
        )
        result = last_json(run_program(program, timeout=300))
        stderr = {p.name: p.read_text() for p in sorted(errors.iterdir()) if p.read_text()}
        report(  # type: ignore[operator]
            "fork",
            case="fork storm",
            children=result["children"],
            hung=result["hung"],
            failed=result["failed"],
            children_with_stderr=len(stderr),
        )
        assert result == {"children": children, "hung": 0, "failed": 0}
        assert stderr == {}
        assert len(server.events) >= 2 * children  # each child flushed its own 2 events
        # Nothing was taken for lost: a file moved aside strands its events (a lock dropped by
        # a close, or a fork racing the close of the parent's connections, did that).
        moved = [p.name for p in tmp_path.iterdir() if ".stale-" in p.name or ".foreign-" in p.name]
        assert moved == []
