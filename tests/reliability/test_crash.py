"""Scenario 1: a child tracking in a loop is SIGKILLed at random moments; nothing it acked is lost.

Each round starts a tracker process that prints every event id once ``track()`` returned, kills
it with SIGKILL before a send, while a send is in flight (the server holds the reply, and may
or may not have stored the batch), after sends, or at a random time, and then drains the
outbox with a fresh process. Acknowledged events must all be stored, each exactly once.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from .conftest import Child, child_program, last_json, run_program

MOMENTS = ("before-send", "mid-send", "after-send", "random")

TRACKER = """
client.start()
print("ready", flush=True)
while True:
    event = make_event()
    client.track(event)
    print(event.event_id, flush=True)
"""

DRAINER = """
client.start()
result = client.flush(timeout=60)
client.stop()
print(json.dumps({"remaining": result.remaining, "delivered": result.delivered}), flush=True)
"""


def _acked(lines: list[str]) -> list[str]:
    """Event ids the tracker printed after track() returned (each is on disk by then)."""
    return [line for line in lines if len(line) == 36]


def _kill_round(
    moment: str, rng: random.Random, server: FakeTelemetryServer, outbox: Path
) -> tuple[list[str], str]:
    """Run one tracker and SIGKILL it at ``moment``; (acked ids, where it died)."""
    requests_before = len(server.requests)
    stored_before = len(server.events)
    # max_queue_size is far above what a round tracks: eviction (a documented, counted loss)
    # must not blur the figure.
    overrides: dict[str, object] = {"max_queue_size": 1_000_000, "batch_size": 100}
    if moment != "before-send":
        overrides.update(batch_size=20, submit_interval_seconds=0.2, request_timeout_seconds=3)
    if moment == "mid-send":
        # The server keeps the request open; half the time it has stored the batch already.
        server.script(ScriptedReply(status=202, hang=True, store=rng.random() < 0.5))
    elif moment == "random":
        server.script(*[ScriptedReply(delay=rng.uniform(0, 0.2)) for _ in range(50)])
    child = Child(child_program(server.url, outbox, TRACKER, **overrides))
    assert child.wait_for_line(lambda line: line == "ready"), child.stderr
    where = moment
    if moment == "before-send":
        assert child.wait_for_lines(1 + rng.randint(1, 90))
        if len(server.requests) != requests_before:
            where = "before-send (a send had started)"
    elif moment == "mid-send":
        assert server.wait_for_requests(requests_before + 1, timeout=30), child.stderr
        time.sleep(rng.uniform(0, 0.05))
    elif moment == "after-send":
        assert server.wait_for_events(stored_before + rng.randint(1, 200), timeout=30)
        time.sleep(rng.uniform(0, 0.05))
    else:
        time.sleep(rng.uniform(0.05, 0.8))
    child.kill()
    assert child.process.returncode == -signal.SIGKILL
    server.script()  # answer normally from now on
    return _acked(child.lines), where


def _crash_rounds(
    rounds: int, server: FakeTelemetryServer, outbox: Path, report: Callable[..., None]
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    acked_all: list[str] = []
    moments: list[str] = []
    for number in range(rounds):
        acked, where = _kill_round(MOMENTS[number % len(MOMENTS)], rng, server, outbox)
        acked_all += acked
        moments.append(where)
        drained = last_json(
            run_program(child_program(server.url, outbox, DRAINER, max_queue_size=1_000_000))
        )
        assert drained["remaining"] == 0, f"round {number} ({where}), seed {seed}: {drained}"
        stored = {e["event_id"] for e in server.events}
        lost = [e for e in acked_all if e not in stored]
        assert lost == [], f"round {number} ({where}), seed {seed}: {len(lost)} acked lost"
    ids = [e["event_id"] for e in server.events]
    with sqlite3.connect(outbox) as db:
        pending = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        (evicted,) = db.execute("SELECT value FROM meta WHERE key = 'counter_evicted'").fetchone()
    report(
        "crash",
        rounds=rounds,
        seed=seed,
        moments=moments,
        acked_by_track=len(acked_all),
        acked_stored=len(set(acked_all) & set(ids)),
        stored_total=len(ids),
        lost=len(set(acked_all) - set(ids)),
        duplicates_sent=server.duplicates_received,
        duplicates_stored=len(ids) - len(set(ids)),
        pending_after=pending,
        evicted=int(evicted),
    )
    assert len(ids) == len(set(ids)), "an event was stored twice"
    assert (pending, int(evicted)) == (0, 0)


@pytest.mark.parametrize(
    "rounds", [pytest.param(4, id="short"), pytest.param(20, id="long", marks=pytest.mark.slow)]
)
def test_sigkill_at_random_moments_loses_no_acked_event(
    rounds: int, server: FakeTelemetryServer, outbox_path: Path, report: Callable[..., None]
) -> None:
    """Trackers SIGKILLed before, during and after sends lose no acked event; none stored twice."""
    _crash_rounds(rounds, server, outbox_path, report)
