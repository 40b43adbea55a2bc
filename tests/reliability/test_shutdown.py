"""Scenario 7: shutdown. stop(), ``with``, ``async with`` and interpreter exit finish within
``shutdown_timeout_seconds`` + 1 s while the server accepts and never answers, whatever the
backlog and wherever the worker is (mid-request, mid-backoff); and a process that ends without
running ``atexit`` (uWSGI, ``os._exit``, SIGTERM) leaves its events to the next process.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mosaic_telemetry import TelemetryClient, TelemetryConfig
from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from ..helpers import make_events
from .conftest import Child, child_program, last_json, run_program

Config = Callable[..., TelemetryConfig]
SHUTDOWN = 1.0
HANG = [ScriptedReply(status=202, hang=True)] * 20


def _pending(outbox: Path) -> int:
    """Events on disk for the next start: in the outbox, or in a spool beside it (an event
    tracked while the worker held the outbox lock, not moved in before the shutdown bound)."""
    with sqlite3.connect(outbox) as db:
        count = int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    for spool in outbox.parent.glob(f"{outbox.name}.spool/*.sqlite3"):
        with sqlite3.connect(spool) as db:
            count += int(db.execute("SELECT COUNT(*) FROM spooled").fetchone()[0])
    return count


@pytest.mark.parametrize("how", ["stop()", "with", "async with"])
@pytest.mark.parametrize("where", ["mid-request", "mid-backoff"])
def test_leaving_is_bounded_with_a_hanging_server(
    how: str,
    where: str,
    server: FakeTelemetryServer,
    make_config: Config,
    outbox_path: Path,
    report: Callable[..., None],
) -> None:
    """Each way of stopping returns within shutdown_timeout + 1 s; the backlog stays on disk."""
    if where == "mid-backoff":  # a 500 first: the worker sits in its retry wait
        server.script(ScriptedReply(status=500, headers={"Retry-After": "20"}), *HANG)
    else:
        server.script(*HANG)
    config = make_config(
        shutdown_timeout_seconds=SHUTDOWN, request_timeout_seconds=30.0, max_retries=5
    )
    client = TelemetryClient(config)
    events = make_events(250)

    async def leave_async() -> None:
        async with client:
            for event in events:
                client.track(event)
            assert server.wait_for_requests(1, timeout=10)
            started[0] = time.monotonic()

    started = [0.0]
    if how == "async with":
        asyncio.run(leave_async())
    elif how == "with":
        with client:
            for event in events:
                client.track(event)
            assert server.wait_for_requests(1, timeout=10)
            started[0] = time.monotonic()
    else:
        client.start()
        for event in events:
            client.track(event)
        assert server.wait_for_requests(1, timeout=10)
        started[0] = time.monotonic()
        client.stop()
    elapsed = time.monotonic() - started[0]
    report("shutdown", case=f"{how} {where}", seconds=round(elapsed, 3), limit=SHUTDOWN + 1)
    assert elapsed <= SHUTDOWN + 1.0, f"{how} took {elapsed:.2f} s"
    assert _pending(outbox_path) == 250


EXIT_WITH_TWO_CLIENTS = """
import attrs
other = TelemetryClient(attrs.evolve(config, outbox_path={other!r}))
for c in (client, other):
    c.start()
    for event in make_events(120):
        c.track(event)
    c.flush(timeout=0)
while len(os.listdir(os.path.dirname({other!r}))) < 2:
    time.sleep(0.01)
time.sleep(0.3)                       # both requests are in flight at the hanging server
print(json.dumps({{"exiting_at": time.monotonic()}}), flush=True)
"""


def test_interpreter_exit_with_two_clients_is_bounded(
    server: FakeTelemetryServer, outbox_path: Path, tmp_path: Path, report: Callable[..., None]
) -> None:
    """Interpreter exit stops every client within one shutdown_timeout + 1 s, not one per client."""
    server.script(*HANG)
    program = child_program(
        server.url,
        outbox_path,
        EXIT_WITH_TWO_CLIENTS.format(other=str(tmp_path / "other" / "outbox.sqlite3")),
        shutdown_timeout_seconds=SHUTDOWN,
        request_timeout_seconds=30.0,
    )
    child = Child(program)
    assert child.finish(timeout=60) == 0, child.stderr
    elapsed = time.monotonic() - last_json(child.lines)["exiting_at"]
    report(
        "shutdown",
        case="interpreter exit, two clients",
        seconds=round(elapsed, 3),
        limit=SHUTDOWN + 1,
    )
    assert elapsed <= SHUTDOWN + 1.0, f"exit took {elapsed:.2f} s"


NO_ATEXIT = """
client.start()
for event in make_events(150):
    client.track(event)
print("tracked", flush=True)
{ending}
"""


@pytest.mark.parametrize(
    "ending",
    [
        "os._exit(0)",  # uWSGI without atexit, multiprocessing children, fork servers
        "os.kill(os.getpid(), signal.SIGTERM); time.sleep(60)",  # default SIGTERM: no atexit
    ],
    ids=["os._exit", "SIGTERM"],
)
def test_process_ending_without_atexit_leaves_events_to_the_next(
    ending: str,
    server: FakeTelemetryServer,
    outbox_path: Path,
    report: Callable[..., None],
) -> None:
    """Skipped atexit hooks lose nothing: the next process delivers every tracked event."""
    child = Child(
        child_program(server.url, outbox_path, "import signal\n" + NO_ATEXIT.format(ending=ending))
    )
    code = child.finish(timeout=60)
    assert code in (0, -signal.SIGTERM), child.stderr
    assert "tracked" in child.lines
    left = len(server.events)
    drained = last_json(
        run_program(
            child_program(
                server.url,
                outbox_path,
                """
                client.start()
                result = client.flush(timeout=30)
                client.stop()
                print(json.dumps({"remaining": result.remaining}))
                """,
            )
        )
    )
    report(
        "shutdown",
        case=f"atexit skipped ({ending.split(';')[0]})",
        tracked=150,
        sent_before_exit=left,
        delivered_by_next=len(server.events) - left,
        lost=150 - len(server.events),
    )
    assert drained["remaining"] == 0
    assert len(server.events) == 150
