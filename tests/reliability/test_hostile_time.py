"""Scenario 11: clocks that jump (issue 11). A wall clock stepped back (NTP, a VM resume) after a
503, after a ``Retry-After`` or after a 2xx that left events without a verdict never freezes
delivery: every wait of a process is on its monotonic clock, the shared pause in the outbox
carries the length it was set for, and a row's backoff further ahead than the longest one we
set is due. Clocks are injected (no sleeping for an hour), plus one real child process whose
``time.time`` is stepped, sharing the outbox with the parent, for the persisted pause.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mosaic_telemetry import (
    TelemetryClient,
    TelemetryConfig,
    TransportRequest,
    TransportResponse,
)
from mosaic_telemetry._store import MAX_ROW_DELAY_SECONDS, LeaseOwner, SqliteOutbox
from mosaic_telemetry._wire.events import event_to_json
from mosaic_telemetry.testing import FakeTelemetryServer, MockTransport, ScriptedReply

from ..helpers import API_KEY, INSTANCE_ID, make_events
from .conftest import Child

Handler = Callable[[TransportRequest], TransportResponse]
HOUR = 3600.0


class Clocks:
    """A wall clock and a monotonic clock that move only when told."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def step_wall(self, seconds: float) -> None:
        """NTP or a VM resume: only the wall clock jumps."""
        self.wall += seconds


def accept_all(request: TransportRequest) -> TransportResponse:
    events = request.json()["events"]
    results = [{"event_id": e["event_id"], "status": "accepted", "error": None} for e in events]
    return TransportResponse.from_json(202, {"accepted": len(events), "results": results})


class Rig:
    """A started client on a real outbox file whose replies come from a list of handlers."""

    def __init__(self, outbox: Path, replies: list[Handler]) -> None:
        self.clocks = Clocks()
        self._replies = list(replies)
        self.transport = MockTransport(self._answer)
        self.client = TelemetryClient(
            TelemetryConfig(
                server_url="https://telemetry.example.com",
                api_key=API_KEY,
                instance_id=INSTANCE_ID,
                outbox_path=outbox,
                submit_interval_seconds=HOUR,
                max_retries=0,
            ),
            transport=self.transport,
            clock=lambda: self.clocks.wall,
            monotonic=lambda: self.clocks.mono,
        )
        self.client.start()

    def _answer(self, request: TransportRequest) -> TransportResponse:
        handler = self._replies.pop(0) if self._replies else accept_all
        return handler(request)

    @property
    def sent(self) -> int:
        return len(self.transport.requests)


@pytest.fixture
def rigs(outbox_path: Path) -> Iterator[Callable[[list[Handler]], Rig]]:
    made: list[Rig] = []

    def make(replies: list[Handler]) -> Rig:
        rig = Rig(outbox_path, replies)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.client.stop()


def status(code: int, body: object = None, **headers: str) -> Handler:
    return lambda request: TransportResponse.from_json(code, body, headers=headers)


@pytest.mark.parametrize("step", [HOUR, HOUR / 2], ids=["1h", "30min"])
def test_a_503_then_a_step_back_does_not_freeze_delivery(
    step: float, rigs: Callable[[list[Handler]], Rig], report: Callable[..., None]
) -> None:
    """After one 503 cycle and the wall clock stepped back, the next flush delivers all 10."""
    rig = rigs([status(503, {"detail": "down"})])
    for event in make_events(10):
        rig.client.track(event)
    assert rig.client.flush(timeout=10).remaining == 10
    rig.clocks.step_wall(-step)
    result = rig.client.flush(timeout=10)
    report("hostile time", case=f"503, step back {step:.0f} s", sent=rig.sent, **_figures(result))
    assert (result.delivered, result.remaining, rig.sent) == (10, 0, 2)


@pytest.mark.parametrize("step", [HOUR, HOUR / 2], ids=["1h", "30min"])
def test_a_retry_after_then_a_step_back_pauses_for_the_retry_after_only(
    step: float, rigs: Callable[[list[Handler]], Rig], report: Callable[..., None]
) -> None:
    """A 503 with Retry-After: 20, then the wall clock stepped back: sending waits 20 s of
    monotonic time, no more, no less."""
    rig = rigs([status(503, {"detail": "busy"}, **{"Retry-After": "20"})])
    for event in make_events(10):
        rig.client.track(event)
    assert rig.client.flush(timeout=10).remaining == 10
    rig.clocks.step_wall(-step)
    waiting = rig.client.flush(timeout=10)
    rig.clocks.advance(19)
    still_waiting = rig.client.flush(timeout=10)
    rig.clocks.advance(2)
    result = rig.client.flush(timeout=10)
    report(
        "hostile time",
        case=f"Retry-After: 20, step back {step:.0f} s",
        sent=rig.sent,
        **_figures(result),
    )
    assert (waiting.remaining, still_waiting.remaining) == (10, 10)
    assert (result.delivered, result.remaining, rig.sent) == (10, 0, 2)


@pytest.mark.parametrize("step", [HOUR, HOUR / 2], ids=["1h", "30min"])
def test_rows_without_a_verdict_are_not_frozen_by_a_step_back(
    step: float, rigs: Callable[[list[Handler]], Rig], report: Callable[..., None]
) -> None:
    """A 2xx naming none of the 10 events backs them off 1 s in the file (wall clock); after a
    step back they are sent once that second has passed on the monotonic clock."""
    rig = rigs([status(202, {"accepted": 0, "rejected": 0, "results": []})])
    for event in make_events(10):
        rig.client.track(event)
    assert rig.client.flush(timeout=10).remaining == 10
    rig.clocks.step_wall(-step)
    rig.clocks.advance(2)
    result = rig.client.flush(timeout=10)
    report(
        "hostile time",
        case=f"unanswered rows, step back {step:.0f} s",
        sent=rig.sent,
        **_figures(result),
    )
    assert (result.delivered, result.remaining, rig.sent) == (10, 0, 2)


def test_a_row_backed_off_within_the_cap_still_waits(outbox_path: Path) -> None:
    """A row released until 1 s from now is not claimed now; one released 2 cap-lengths ahead
    (a clock stepped back since) is claimed at once."""
    now = [1_800_000_000.0]
    outbox = SqliteOutbox(outbox_path, clock=lambda: now[0])
    try:
        owner = LeaseOwner.for_this_process()
        near, far = make_events(2)
        for event in (near, far):
            outbox.add(str(event.event_id), event_to_json(event))
        rows = outbox.claim(owner, 10, 30.0)
        by_id = {r.event_id: r.row_id for r in rows}
        outbox.release(owner, [by_id[str(near.event_id)]], retry_at=now[0] + 1)
        far_at = now[0] + 2 * MAX_ROW_DELAY_SECONDS
        outbox.release(owner, [by_id[str(far.event_id)]], retry_at=far_at)
        claimed = [r.event_id for r in outbox.claim(owner, 10, 30.0)]
    finally:
        outbox.close()
    assert claimed == [str(far.event_id)]


def test_a_pause_from_an_earlier_build_is_read_and_old_readers_still_read_ours(
    outbox_path: Path,
) -> None:
    """A plain-float not_before (earlier builds) reads as a pause of unknown length, and the
    new format keeps not_before a plain float for readers that know nothing else."""
    outbox = SqliteOutbox(outbox_path)
    try:
        outbox.set_meta("not_before", "1800000060.0")
        legacy = outbox.get_pause()
        outbox.set_not_before(1_800_000_120.0, 60.0)
        ours = outbox.get_pause()
    finally:
        outbox.close()
    with sqlite3.connect(outbox_path) as db:
        raw = db.execute("SELECT value FROM meta WHERE key = 'not_before'").fetchone()[0]
    assert legacy == (1_800_000_060.0, None)
    assert ours == (1_800_000_120.0, 60.0)
    assert float(raw) == 1_800_000_120.0


_CHILD = """\
import json, time
_real_time = time.time
time.time = lambda: _real_time() - {step!r}  # the wall clock stepped back, before any import
from tests.helpers import API_KEY, INSTANCE_ID, make_events
from mosaic_telemetry import TelemetryClient, TelemetryConfig
mono = [1000.0]
client = TelemetryClient(
    TelemetryConfig(server_url={url!r}, api_key=API_KEY, instance_id=INSTANCE_ID,
                    outbox_path={outbox!r}, submit_interval_seconds=3600.0, max_retries=0),
    monotonic=lambda: mono[0],
)
client.start()
for event in make_events(5):
    client.track(event)
first = client.flush(timeout=30)
mono[0] += 59
second = client.flush(timeout=30)
mono[0] += 2
third = client.flush(timeout=30)
client.stop()
print(json.dumps({{"flushes": [[r.delivered, r.remaining] for r in (first, second, third)]}}))
"""


@pytest.mark.parametrize("step", [HOUR, 50 * 60.0], ids=["1h", "50min"])
def test_a_persisted_retry_after_is_clamped_in_a_process_whose_clock_was_stepped_back(
    step: float,
    server: FakeTelemetryServer,
    make_config: Callable[..., TelemetryConfig],
    outbox_path: Path,
    report: Callable[..., None],
) -> None:
    """A 429 Retry-After: 60 persisted by the parent holds a restarted child whose time.time
    is stepped back for 60 s of its own time, not for 60 s + the step."""
    server.script(ScriptedReply(status=429, headers={"Retry-After": "60"}))
    now = time.time()  # the parent's wall clock, held still: the pause it stores is exact
    parent = TelemetryClient(make_config(max_retries=0), clock=lambda: now)
    parent.start()
    for event in make_events(5):
        parent.track(event)
    assert parent.flush(timeout=10).remaining == 5
    parent.stop()
    until, seconds = SqliteOutbox(outbox_path, server_url=server.url).get_pause()
    program = _CHILD.format(step=step, url=server.url, outbox=str(outbox_path))
    child = Child(textwrap.dedent(program))
    code = child.finish(60)
    assert code == 0, child.stderr
    flushes = json.loads(child.lines[-1])["flushes"]
    report(
        "hostile time",
        case=f"persisted Retry-After: 60, child stepped back {step:.0f} s",
        stored_seconds=seconds,
        child_flushes_delivered_remaining=flushes,
        requests=len(server.requests),
        stored_events=len(server.events),
    )
    assert seconds == 60.0
    assert until == now + 60.0
    assert flushes == [[0, 10], [0, 10], [10, 0]]
    assert len(server.events) == 10
    assert len(server.requests) == 2  # the 429, then one batch of all 10 from the child


def _figures(result: object) -> dict[str, object]:
    return {
        "delivered": getattr(result, "delivered", None),
        "remaining": getattr(result, "remaining", None),
    }
