"""TelemetryClient end to end over real sockets: tracking, flushing, verdicts, retries."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path

import pytest

from mosaic_telemetry import TelemetryClient, TelemetryConfig
from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from .helpers import API_KEY, make_event, make_events

Config = Callable[..., TelemetryConfig]


def test_quick_start_delivers_everything(server: FakeTelemetryServer, make_config: Config) -> None:
    """The upstream `with TelemetryClient(config) as client: client.track(e)` shape delivers all."""
    events = make_events(5)
    with TelemetryClient(make_config()) as client:
        for event in events:
            client.track(event)
    assert sorted(e["event_id"] for e in server.events) == sorted(str(e.event_id) for e in events)
    assert server.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"


def test_batches_hold_at_most_batch_size(
    server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """250 events go out in batches of at most 100, and all arrive."""
    client = TelemetryClient(make_config())
    clients.append(client)
    for event in make_events(250):
        client.track(event)
    client.start()
    result = client.flush(timeout=30)
    assert (result.delivered, result.remaining, result.timed_out) == (250, 0, False)
    sizes = [len(r.json["events"]) for r in server.requests]
    assert max(sizes) == 100 and sum(sizes) == 250


def test_small_batch_size_is_honoured(
    server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """batch_size=7 sends batches of 7; reaching it wakes the worker without a flush."""
    client = TelemetryClient(make_config(batch_size=7))
    clients.append(client)
    client.start()
    for event in make_events(14):
        client.track(event)
    assert server.wait_for_events(14, timeout=20)
    sizes = [len(r.json["events"]) for r in server.requests]
    # The 7th track() wakes the worker, which sends 7; the other 7 arrive while it sends, so
    # how they split into later batches depends on timing, never above 7.
    assert (sizes[0], max(sizes), sum(sizes)) == (7, 7, 14), sizes


def test_event_is_on_disk_as_readable_json_when_track_returns(
    make_config: Config, outbox_path: Path, clients: list[TelemetryClient]
) -> None:
    """After track() the event is a row of plain JSON text another connection can read."""
    client = TelemetryClient(make_config())
    clients.append(client)
    event = make_event()
    client.track(event)
    with sqlite3.connect(outbox_path) as db:
        (body,) = db.execute(
            "SELECT body FROM events WHERE event_id = ?", (str(event.event_id),)
        ).fetchone()
    assert json.loads(body)["actual_cost_usd_micros"] == 919200


def test_track_never_raises(
    make_config: Config, clients: list[TelemetryClient], caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage given to track() is logged and counted, never raised."""
    client = TelemetryClient(make_config())
    clients.append(client)
    for junk in (None, 42, "event", {"event_id": "x"}, object()):
        client.track(junk)  # type: ignore[arg-type]
    assert client.stats()["invalid"] == 5
    assert client.queue_size == 0
    assert any("not tracked" in r.message for r in caplog.records)


def test_disabled_client_drops_silently_and_creates_no_file(
    make_config: Config, outbox_path: Path
) -> None:
    """enabled=False: track() is a no-op and no outbox file appears."""
    with TelemetryClient(make_config(enabled=False)) as client:
        client.track(make_event())
        assert not client.is_running
    assert not outbox_path.parent.exists()


def test_threads_track_concurrently(
    server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """8 threads x 50 events: every one is stored, none twice."""
    client = TelemetryClient(make_config())
    clients.append(client)
    client.start()

    def work() -> None:
        for event in make_events(50):
            client.track(event)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.flush(timeout=30).remaining == 0
    assert len(server.events) == 400
    assert server.duplicates_received == 0


def test_async_context_and_lifespan(server: FakeTelemetryServer, make_config: Config) -> None:
    """`async with` and start_async/stop_async work, and track() is fine inside a coroutine."""

    async def main() -> None:
        async with TelemetryClient(make_config()) as client:
            client.track(make_event())
        other = TelemetryClient(make_config())
        await other.start_async()
        assert other.is_running
        other.track(make_event())
        await other.stop_async()
        assert not other.is_running

    asyncio.run(main())
    assert len(server.events) == 2


def test_rejected_events_are_dead_lettered(
    server: FakeTelemetryServer,
    make_config: Config,
    outbox_path: Path,
    clients: list[TelemetryClient],
) -> None:
    """Per-event 'rejected' verdicts move those rows to the dead-letter table with the reason."""
    events = make_events(3)
    verdicts = [
        {"event_id": str(events[0].event_id), "status": "accepted", "error": None},
        {"event_id": str(events[1].event_id), "status": "rejected", "error": "model unknown"},
        {"event_id": str(events[2].event_id), "status": "duplicate", "error": None},
    ]
    server.script(
        ScriptedReply(status=202, body={"accepted": 1, "rejected": 1, "results": verdicts})
    )
    client = TelemetryClient(make_config())
    clients.append(client)
    client.start()
    for event in events:
        client.track(event)
    result = client.flush(timeout=20)
    assert (result.delivered, result.dead_lettered, result.remaining) == (1, 1, 0)
    stats = client.stats()
    assert (stats["duplicates"], stats["dead"]) == (1, 1)
    with sqlite3.connect(outbox_path) as db:
        rows = db.execute("SELECT event_id, reason, http_status FROM dead").fetchall()
    assert rows == [(str(events[1].event_id), "rejected by server: model unknown", 202)]


def test_422_dead_letters_the_named_index_and_resends_the_rest(
    server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """A 422 naming index 1 dead-letters that event; the others are resent and stored."""
    detail = [{"loc": ["body", "events", 1, "model"], "msg": "bad", "type": "value_error"}]
    server.script(ScriptedReply(status=422, body={"detail": detail}))
    events = make_events(3)
    client = TelemetryClient(make_config())
    clients.append(client)
    client.start()
    for event in events:
        client.track(event)
    result = client.flush(timeout=20)
    assert (result.dead_lettered, result.remaining) == (1, 0)
    stored = {e["event_id"] for e in server.events}
    assert stored == {str(events[0].event_id), str(events[2].event_id)}


@pytest.mark.parametrize("status", [413, 400])
def test_oversized_or_unreadable_batch_is_split(
    status: int, server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """413/400 on a batch: halves are sent apart and every event still arrives."""
    server.script(ScriptedReply(status=status))
    client = TelemetryClient(make_config())
    clients.append(client)
    client.start()
    for event in make_events(10):
        client.track(event)
    result = client.flush(timeout=20)
    assert (result.delivered, result.remaining, result.dead_lettered) == (10, 0, 0)
    assert [len(r.json["events"]) for r in server.requests] == [10, 5, 5]


def test_5xx_retries_then_delivers(
    server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """Two 500s then success: delivered on the third attempt, retries counted."""
    server.script(ScriptedReply(status=500), ScriptedReply(status=503))
    client = TelemetryClient(make_config(max_retries=3))
    clients.append(client)
    client.start()
    client.track(make_event())
    result = client.flush(timeout=30)
    assert (result.delivered, result.remaining) == (1, 0)
    assert client.stats()["retried"] == 2
    assert [r.status for r in server.requests] == [500, 503, 202]


def test_retries_exhausted_keep_events_for_next_cycle(
    server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """After max_retries the events stay in the outbox and the next flush delivers them."""
    server.script(*[ScriptedReply(status=500)] * 2)
    client = TelemetryClient(make_config(max_retries=1))
    clients.append(client)
    client.start()
    client.track(make_event())
    first = client.flush(timeout=30)
    assert (first.delivered, first.remaining) == (0, 1)
    assert "500" in str(client.stats()["last_error"])
    second = client.flush(timeout=30)
    assert (second.delivered, second.remaining) == (1, 0)


def _wall(server: FakeTelemetryServer, index: int) -> float:
    """The wall-clock time of recorded request ``index``."""
    return server.requests[index].at + (time.time() - time.monotonic())


def test_429_retry_after_seconds_is_waited(
    server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """429 with Retry-After: 2 → the next attempt comes at least 2 s later; nothing lost."""
    server.script(ScriptedReply(status=429, headers={"Retry-After": "2"}))
    client = TelemetryClient(make_config())
    clients.append(client)
    client.start()
    client.track(make_event())
    assert client.flush(timeout=30).remaining == 0
    waited = server.requests[1].at - server.requests[0].at
    assert waited >= 2.0  # a floor: a busy machine only adds to it
    assert len(server.events) == 1


def test_503_retry_after_http_date_is_waited(
    server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """503 with an HTTP-date Retry-After → no attempt before that date; nothing lost."""
    target = int(time.time()) + 3
    server.script(
        ScriptedReply(status=503, headers={"Retry-After": formatdate(target, usegmt=True)})
    )
    client = TelemetryClient(make_config())
    clients.append(client)
    client.start()
    client.track(make_event())
    assert client.flush(timeout=30).remaining == 0
    assert _wall(server, 1) >= target - 0.05  # a floor: a busy machine only adds to it
    assert len(server.events) == 1


def test_auth_failure_keeps_events_and_pauses(
    server: FakeTelemetryServer,
    make_config: Config,
    clients: list[TelemetryClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """401/403 keep every event, pause sending, and log one error for the pause."""
    client = TelemetryClient(make_config(api_key="cd" * 32))
    clients.append(client)
    client.start()
    for event in make_events(3):
        client.track(event)
    with caplog.at_level(logging.ERROR, logger="mosaic_telemetry"):
        first = client.flush(timeout=20)
        second = client.flush(timeout=20)
    assert (first.remaining, second.remaining) == (3, 3)
    assert len(server.requests) == 1, "the second flush must not send during the pause"
    assert server.requests[0].status in (401, 403)
    assert len([r for r in caplog.records if "refused" in r.message]) == 1
    assert "cd" * 32 not in caplog.text


def test_config_problems_keep_events_unsent(
    server: FakeTelemetryServer,
    make_config: Config,
    clients: list[TelemetryClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A config with problems logs them once and keeps events in the outbox, sending nothing."""
    with caplog.at_level(logging.ERROR, logger="mosaic_telemetry"):
        client = TelemetryClient(make_config(api_key="short", batch_size=500))
    clients.append(client)
    client.start()
    client.track(make_event())
    assert client.flush(timeout=5).remaining == 1
    assert server.requests == []
    assert len([r for r in caplog.records if "configuration has problems" in r.message]) == 1
    assert "batch_size" in caplog.text and "short" not in caplog.text


def test_eviction_is_oldest_first_counted_and_logged(
    make_config: Config, clients: list[TelemetryClient], caplog: pytest.LogCaptureFixture
) -> None:
    """max_queue_size bounds pending rows: the oldest go first, counted and logged."""
    client = TelemetryClient(make_config(max_queue_size=5))
    clients.append(client)
    events = make_events(8)
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        for event in events:
            client.track(event)
    assert client.queue_size == 5
    assert client.stats()["evicted"] == 3
    assert caplog.records, "eviction must be logged"


def test_flush_on_a_stopped_client_sends_nothing(
    server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """flush() before start() reports what remains and sends nothing."""
    client = TelemetryClient(make_config())
    clients.append(client)
    client.track(make_event())
    assert client.flush(timeout=1).remaining == 1
    assert server.requests == []


def test_stats_shape(make_config: Config, clients: list[TelemetryClient]) -> None:
    """stats() reports the documented counters and outbox figures; the age is by the clock."""
    now = [1_700_000_000.0]
    client = TelemetryClient(make_config(), clock=lambda: now[0])
    clients.append(client)
    client.track(make_event())
    now[0] += 90.0
    stats = client.stats()
    for key in (
        "tracked",
        "delivered",
        "duplicates",
        "retried",
        "dead_lettered",
        "evicted",
        "pending",
        "oldest_pending_age_seconds",
        "last_error",
        "durable",
    ):
        assert key in stats
    assert (stats["tracked"], stats["pending"], stats["durable"]) == (1, 1, True)
    assert stats["oldest_pending_age_seconds"] == 90.0
    now[0] -= 3600.0  # the clock stepped back past the event: an age of 0, never negative
    assert client.stats()["oldest_pending_age_seconds"] == 0.0


def test_on_error_receives_background_errors(
    server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """on_error is called with the background failure."""
    seen: list[BaseException] = []
    server.script(ScriptedReply(status=500))
    client = TelemetryClient(make_config(max_retries=0, on_error=seen.append))
    clients.append(client)
    client.start()
    client.track(make_event())
    client.flush(timeout=20)
    assert seen and "500" in str(seen[0])


def test_a_failing_outbox_write_is_retried_by_the_worker(
    server: FakeTelemetryServer,
    make_config: Config,
    clients: list[TelemetryClient],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A write error (disk full) sends events to the spool; they and the rows on disk arrive."""
    from mosaic_telemetry import OutboxError
    from mosaic_telemetry._store.database import FileDatabase

    client = TelemetryClient(make_config())
    clients.append(client)
    on_disk = make_event()
    client.track(on_disk)
    real_add = FileDatabase.add

    def full_disk(
        self: FileDatabase, row: tuple[str, str, float], max_pending: int
    ) -> tuple[bool, int]:
        raise OutboxError("database or disk is full")

    monkeypatch.setattr(FileDatabase, "add", full_disk)
    held = make_event()
    with caplog.at_level(logging.ERROR, logger="mosaic_telemetry"):
        client.track(held)
        client.track(make_event())
    assert len([r for r in caplog.records if "outbox write failed" in r.message]) == 1
    assert client.stats()["durable"] is True  # the spool is on disk
    assert client.stats()["handed_off"] == 2
    monkeypatch.setattr(FileDatabase, "add", real_add)
    client.start()
    assert client.flush(timeout=20).remaining == 0
    stored = {e["event_id"] for e in server.events}
    assert {str(on_disk.event_id), str(held.event_id)} <= stored
    assert len(stored) == 3
