"""The worker, driven one cycle at a time through MockTransport: every row of wire-v1's
response table, with injected clocks and sleep (no sockets, no real waiting)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mosaic_telemetry import TransportError, TransportRequest, TransportResponse
from mosaic_telemetry._delivery.api import DryRunApi, TelemetryApi
from mosaic_telemetry._delivery.ports import Sender
from mosaic_telemetry._delivery.stats import Stats, WorkerSettings
from mosaic_telemetry._delivery.worker import FIRST_PAUSE_SECONDS, Worker
from mosaic_telemetry._store import SqliteOutbox
from mosaic_telemetry._wire.events import event_to_json
from mosaic_telemetry.testing import MockTransport

from .helpers import API_KEY, make_events

Handler = Callable[[TransportRequest], TransportResponse]
START = 1_800_000_000.0


class Clocks:
    """A wall clock and a monotonic clock that only move when told; ``sleep`` moves both."""

    def __init__(self) -> None:
        self.wall = START
        self.mono = 1000.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def accept_all(request: TransportRequest) -> TransportResponse:
    """202 with an accepted verdict for every event."""
    events = request.json()["events"]
    results = [{"event_id": e["event_id"], "status": "accepted", "error": None} for e in events]
    return TransportResponse.from_json(202, {"accepted": len(events), "results": results})


class Rig:
    """A worker over an in-memory outbox and a MockTransport whose handler the test sets."""

    def __init__(self, **settings: Any) -> None:
        self.clocks = Clocks()
        self.handler: Handler = accept_all
        self.transport = MockTransport(lambda request: self.handler(request))
        self.outbox = SqliteOutbox.in_memory(max_pending=10_000, clock=lambda: self.clocks.wall)
        self.stats = Stats()
        values: dict[str, Any] = {
            "batch_size": 100,
            "submit_interval": 300.0,
            "request_timeout": 5.0,
            "max_retries": 2,
        }
        values.update(settings)
        self.worker = self.make_worker(
            TelemetryApi(
                "https://telemetry.example.com",
                API_KEY,
                transport=self.transport,
                timeout=5.0,
                clock=lambda: self.clocks.wall,
            ),
            WorkerSettings(**values),
        )

    def make_worker(self, sender: Sender, settings: WorkerSettings) -> Worker:
        return Worker(
            outbox=lambda: self.outbox,
            sender=sender,
            stats=self.stats,
            settings=settings,
            clock=lambda: self.clocks.wall,
            monotonic=lambda: self.clocks.mono,
            sleep=self.clocks.sleep,
        )

    def track(self, count: int) -> list[str]:
        """Add ``count`` events to the outbox; their ids in order."""
        events = make_events(count)
        for event in events:
            self.outbox.add(str(event.event_id), event_to_json(event))
        return [str(e.event_id) for e in events]

    def cycle(self, *, flush: bool = False) -> None:
        """One timed cycle (or one a flush asked for, which ignores the failure backoff)."""
        self.worker.run_cycle(final=flush)

    @property
    def sent(self) -> int:
        return len(self.transport.requests)

    def sizes(self) -> list[int]:
        """Events per request, in order."""
        return [len(r.json()["events"]) for r in self.transport.requests]


@pytest.fixture
def rig() -> Iterator[Rig]:
    made = Rig()
    yield made
    made.outbox.close()


def reply(status: int, body: Any = None, **headers: str) -> Handler:
    """A handler that always answers ``status`` with ``body`` (JSON) and ``headers``."""
    return lambda request: TransportResponse.from_json(status, body, headers=headers)


def test_202_with_verdicts_acks_duplicates_and_dead_letters(rig: Rig) -> None:
    """202: accepted and duplicate rows are deleted and counted; rejected ones dead-lettered."""
    ids = rig.track(3)
    verdicts = [
        {"event_id": ids[0], "status": "accepted", "error": None},
        {"event_id": ids[1], "status": "duplicate", "error": None},
        {"event_id": ids[2], "status": "rejected", "error": "model: too long"},
    ]
    rig.handler = reply(202, {"accepted": 1, "rejected": 1, "results": verdicts})
    rig.cycle()
    assert rig.sent == 1
    assert (rig.outbox.pending_count(), rig.outbox.dead_count()) == (0, 1)
    snap = rig.stats.snapshot()
    assert (snap.delivered, snap.duplicates, snap.dead_lettered) == (1, 1, 1)
    [dead] = rig.outbox.list_rows(dead=True)
    assert "model: too long" in dead["reason"]


@pytest.mark.parametrize("body", [{"accepted": 3}, None, "not json at all"])
def test_2xx_without_readable_results_counts_all_accepted(rig: Rig, body: Any) -> None:
    """2xx with results absent, or a malformed body: every event counts as accepted."""
    rig.track(3)
    rig.handler = reply(200, body)
    rig.cycle()
    assert (rig.outbox.pending_count(), rig.stats.get("delivered")) == (0, 3)


def test_400_splits_then_dead_letters_the_one_bad_event(rig: Rig) -> None:
    """400: the batch is never resent as is; halves go apart until the bad event is alone."""
    ids = rig.track(4)

    def refuse_the_third(request: TransportRequest) -> TransportResponse:
        sent = [e["event_id"] for e in request.json()["events"]]
        if ids[2] in sent:
            return TransportResponse.from_json(400, {"detail": "unreadable envelope"})
        return accept_all(request)

    rig.handler = refuse_the_third
    rig.cycle()
    assert rig.sizes() == [4, 2, 2, 1, 1]
    assert (rig.stats.get("delivered"), rig.outbox.dead_count()) == (3, 1)
    [dead] = rig.outbox.list_rows(dead=True)
    assert dead["event_id"] == ids[2]


def test_413_splits_and_retries_halves(rig: Rig) -> None:
    """413: the batch is halved until the server takes it."""
    rig.track(8)

    def small_only(request: TransportRequest) -> TransportResponse:
        if len(request.json()["events"]) > 2:
            return TransportResponse.from_json(413, {"detail": "too large"})
        return accept_all(request)

    rig.handler = small_only
    rig.cycle()
    assert rig.stats.get("delivered") == 8
    assert rig.sizes() == [8, 4, 2, 2, 4, 2, 2]


def test_422_dead_letters_the_named_index_and_resends_the_rest(rig: Rig) -> None:
    """422 naming index 1: that event is dead-lettered, the other two are resent at once."""
    rig.track(3)
    answers = iter(
        [
            reply(422, {"detail": [{"loc": ["body", "events", 1, "model"], "msg": "too long"}]}),
            accept_all,
        ]
    )
    rig.handler = lambda request: next(answers)(request)
    rig.cycle()
    assert rig.sizes() == [3, 2]
    assert (rig.stats.get("delivered"), rig.outbox.dead_count()) == (2, 1)


def test_422_without_a_readable_index_bisects(rig: Rig) -> None:
    """422 whose detail names no index: the batch is bisected like a 400."""
    rig.track(2)
    rig.handler = reply(422, {"detail": "some events are invalid"})
    rig.cycle()
    assert rig.sizes() == [2, 1, 1]
    assert rig.outbox.dead_count() == 2


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_keep_every_event_and_pause(rig: Rig, status: int) -> None:
    """401/403: nothing is lost, sending pauses (even for a flush), then resumes."""
    rig.track(3)
    rig.handler = reply(status, {"detail": "bad key"})
    rig.cycle()
    rig.cycle(flush=True)
    assert (rig.sent, rig.outbox.pending_count()) == (1, 3)
    rig.handler = accept_all
    rig.clocks.advance(FIRST_PAUSE_SECONDS + 1)
    rig.cycle()
    assert (rig.sent, rig.outbox.pending_count()) == (2, 0)


def test_429_waits_exactly_retry_after_then_sends(rig: Rig) -> None:
    """429 with ``Retry-After: 2``: the next attempt comes after a wait of at least 2 s."""
    rig.track(1)
    answers = iter([reply(429, {"detail": "slow down"}, **{"Retry-After": "2"}), accept_all])
    rig.handler = lambda request: next(answers)(request)
    rig.cycle()
    assert rig.sent == 2
    assert len(rig.clocks.slept) == 1
    assert rig.clocks.slept[0] >= 2.0
    assert rig.stats.get("delivered") == 1


def test_a_long_retry_after_becomes_a_shared_pause(rig: Rig) -> None:
    """429 with ``Retry-After: 120``: no inline sleep; the outbox pause holds every process."""
    rig.track(1)
    rig.handler = reply(429, None, **{"Retry-After": "120"})
    rig.cycle()
    assert (rig.sent, rig.clocks.slept) == (1, [])
    assert rig.outbox.get_not_before() == pytest.approx(START + 120)
    rig.handler = accept_all
    rig.cycle(flush=True)  # a flush obeys the shared pause too
    assert rig.sent == 1
    rig.clocks.advance(121)
    rig.cycle(flush=True)
    assert (rig.sent, rig.outbox.pending_count()) == (2, 0)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_backs_off_up_to_max_retries_then_keeps_the_events(rig: Rig, status: int) -> None:
    """5xx: ``max_retries`` retries with growing jittered waits, then the events stay."""
    rig.track(2)
    rig.handler = reply(status, {"detail": "down"})
    rig.cycle()
    assert rig.sent == 3  # max_retries=2
    assert len(rig.clocks.slept) == 2
    assert rig.outbox.pending_count() == 2
    assert rig.stats.get("retried") == 2


@pytest.mark.parametrize("error", ["connection refused", "read timed out"])
def test_network_errors_back_off_and_keep_the_events(rig: Rig, error: str) -> None:
    """No reply at all (the transport raises TransportError) is retried like a 5xx."""
    rig.track(2)

    def fail(request: TransportRequest) -> TransportResponse:
        raise TransportError(error)

    rig.handler = fail
    rig.cycle()
    assert (rig.sent, rig.outbox.pending_count()) == (3, 2)
    rig.handler = accept_all
    rig.cycle(flush=True)  # a flush goes at once, despite the failure backoff
    assert rig.outbox.pending_count() == 0


def test_a_failed_cycle_waits_for_the_next_interval(rig: Rig) -> None:
    """After a failed cycle a timed cycle sends nothing until the submit interval passed."""
    rig.track(1)
    rig.handler = reply(503, None)
    rig.cycle()
    rig.handler = accept_all
    rig.cycle()
    assert rig.sent == 3
    rig.clocks.advance(301)
    rig.cycle()
    assert (rig.sent, rig.outbox.pending_count()) == (4, 0)


def test_unknown_and_upper_cased_ids_never_make_a_hot_loop(rig: Rig) -> None:
    """A 2xx naming ids we never sent: one request per cycle, the rows back off, none lost;
    an upper-cased spelling of our id counts as our id."""
    ids = rig.track(5)
    ours = [{"event_id": ids[0].upper(), "status": "accepted", "error": None}]
    strangers = [{"event_id": "0" * 8 + "-0000-4000-8000-" + "0" * 12, "status": "accepted"}]
    rig.handler = reply(202, {"results": ours + strangers})
    rig.cycle(flush=True)
    rig.cycle(flush=True)
    assert rig.sent == 1
    assert (rig.stats.get("delivered"), rig.outbox.pending_count()) == (1, 4)
    rig.handler = accept_all
    rig.clocks.advance(2)
    rig.cycle()
    assert (rig.sent, rig.outbox.pending_count()) == (2, 0)


def test_a_pause_stored_beyond_the_cap_is_taken_for_a_clock_step(rig: Rig) -> None:
    """A shared pause 2 h ahead (the wall clock was stepped back) is ignored, not obeyed."""
    rig.track(1)
    rig.outbox.set_not_before(START + 7200)
    rig.cycle()
    assert rig.outbox.pending_count() == 0


def test_a_dry_run_sends_nothing_and_counts_dry_run(rig: Rig) -> None:
    """Dry run: the rows leave the outbox as dry_run, never as delivered, with no request."""
    rig.worker = rig.make_worker(DryRunApi(), WorkerSettings(100, 300.0, 5.0, 2))
    rig.track(3)
    rig.cycle()
    assert (rig.sent, rig.outbox.pending_count()) == (0, 0)
    snap = rig.stats.snapshot()
    assert (snap.delivered, snap.dry_run_skipped) == (0, 3)
    assert rig.outbox.counters()["dry_run"] == 3


def test_batches_are_at_most_batch_size(rig: Rig) -> None:
    """250 pending with batch_size 100: a flush sends 100, 100, 50."""
    rig.track(250)
    rig.cycle(flush=True)
    assert rig.sizes() == [100, 100, 50]


def test_the_key_is_in_the_header_and_nowhere_in_the_body(rig: Rig) -> None:
    """Each request carries the key once, in the Authorization header."""
    rig.track(1)
    rig.cycle()
    [request] = rig.transport.requests
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in request.content.decode()
    assert json.loads(request.content)["events"][0]["event_id"]


def test_a_later_stop_keeps_the_deadline_of_the_first_ask(rig: Rig) -> None:
    """stop(wait=False) fixes the deadline; a later stop() waits only for what is left of it.

    This is how N clients leave at interpreter exit within one shutdown_timeout: every worker
    is asked first, then each is waited for. The clock moves by hand: if the second stop()
    took a new hour-long deadline, it would hang (the thread is held in a request) instead of
    returning after the join's 0.2 s grace.
    """
    sending, release = threading.Event(), threading.Event()

    def held(request: TransportRequest) -> TransportResponse:
        sending.set()
        release.wait(30)  # only a guard against a hang: the test releases it
        return accept_all(request)

    rig.track(1)
    rig.handler = held
    rig.worker.start()
    rig.worker.wake()
    ended: list[bool] = []
    stopper = threading.Thread(target=lambda: ended.append(rig.worker.stop(3600.0)))
    try:
        assert sending.wait(30)
        assert rig.worker.stop(3600.0, wait=False) is True  # asked: the deadline is mono + 1 h
        rig.clocks.advance(3600.0)  # ... and that hour has passed
        stopper.start()
        stopper.join(30)  # only a guard against a hang
        assert ended == [False]  # returned at the first deadline, the thread still held
    finally:
        release.set()
    assert rig.worker.flush(30)  # the released thread ends (flush returns when it has)
    assert not rig.worker.alive
    assert rig.outbox.pending_count() == 0  # the held batch was acked on release
