"""Scenario 7: shutdown. stop(), ``with``, ``async with`` and interpreter exit return while the
server accepts and never answers, whatever the backlog and wherever the worker is (mid-request,
mid-backoff), and leave the backlog on disk; and a process that ends without running ``atexit``
(uWSGI, ``os._exit``, SIGTERM) leaves its events to the next process.

The proof is the outcome: the requests time out after an hour and the backoff lasts 30 s, so
only the shutdown deadline can end them. How long each way out took (``shutdown_timeout_seconds``
+ about 0.2 s) is a figure, reported (docs/reliability.md), not asserted: the assertions on
durations are loose guards against a hang, far below the hour and the 30 s.
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
HOUR = 3600.0  # the request timeout: a request the server holds ends only with the shutdown
BACKOFF = "30"  # the longest Retry-After the worker waits inline (MAX_INLINE_RETRY_AFTER)
HANG_GUARD = 20.0  # seconds: a loose guard against a hang, below the backoff and the hour


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
    """Each way of stopping returns while a request hangs for an hour or the worker waits out
    a 30 s backoff, sends nothing more, and leaves the backlog on disk."""
    if where == "mid-backoff":  # a 500 first: the worker sits in its retry wait
        server.script(ScriptedReply(status=500, headers={"Retry-After": BACKOFF}), *HANG)
    else:
        server.script(*HANG)
    config = make_config(
        shutdown_timeout_seconds=SHUTDOWN, request_timeout_seconds=HOUR, max_retries=5
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
    assert len(server.requests) == 1  # the backoff was cut, not waited out and retried
    assert _pending(outbox_path) == 250
    assert elapsed < HANG_GUARD, f"{how} took {elapsed:.2f} s"  # a hang guard, not the claim


EXIT_WITH_TWO_CLIENTS = """
import attrs
other = TelemetryClient(attrs.evolve(config, outbox_path={other!r}))
for c in (client, other):
    c.start()
    for event in make_events(120):
        c.track(event)
    c.flush(timeout=0)
print("tracked", flush=True)
sys.stdin.readline()                  # the test saw both requests arrive at the hanging server
print(json.dumps({{"exiting_at": time.monotonic()}}), flush=True)
"""


def test_interpreter_exit_with_two_clients_is_bounded(
    server: FakeTelemetryServer, outbox_path: Path, tmp_path: Path, report: Callable[..., None]
) -> None:
    """Interpreter exit stops every client while both hold a request the server never answers
    (an hour-long timeout), and both backlogs stay on disk. That the clients share one
    shutdown_timeout rather than taking one each is the reported figure (and, without a
    clock, tests/test_worker.py::test_a_later_stop_keeps_the_deadline_of_the_first_ask)."""
    server.script(*HANG)
    other = tmp_path / "other" / "outbox.sqlite3"
    program = child_program(
        server.url,
        outbox_path,
        EXIT_WITH_TWO_CLIENTS.format(other=str(other)),
        shutdown_timeout_seconds=SHUTDOWN,
        request_timeout_seconds=HOUR,
    )
    child = Child(program)
    assert child.wait_for_line(lambda line: line == "tracked"), child.stderr
    assert server.wait_for_requests(2, timeout=30), "both clients' requests are in flight"
    child.say("exit")
    assert child.finish(timeout=60) == 0, child.stderr
    elapsed = time.monotonic() - last_json(child.lines)["exiting_at"]
    report(
        "shutdown",
        case="interpreter exit, two clients",
        seconds=round(elapsed, 3),
        limit=SHUTDOWN + 1,
    )
    assert len(server.requests) == 2  # one each, held to the end
    assert (_pending(outbox_path), _pending(other)) == (120, 120)
    assert elapsed < HANG_GUARD, f"exit took {elapsed:.2f} s"  # a hang guard, not the claim


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
