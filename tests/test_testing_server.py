"""Tests of mosaic_telemetry.testing.server: FakeTelemetryServer speaking wire-v1 over sockets."""

from __future__ import annotations

import gzip
import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import requests

from mosaic_telemetry import _enums
from mosaic_telemetry._models import PredictionQuery, TaskCompletionEvent
from mosaic_telemetry._wire.events import event_to_dict
from mosaic_telemetry.testing import FakeTelemetryServer, RecordedRequest, ScriptedReply

from .fake_wire import (
    EVENTS_PATH,
    KEY,
    OTHER_KEY,
    PREDICTIONS_PATH,
    QUERY,
    handler_threads,
    in_thread,
    post_events,
    post_queries,
    valid_event,
)


@pytest.fixture
def server() -> Iterator[FakeTelemetryServer]:
    """A started fake server with default settings."""
    with FakeTelemetryServer() as fake:
        yield fake


def port_of(server: FakeTelemetryServer) -> int:
    """The server's TCP port."""
    return int(server.url.rsplit(":", 1)[1])


# --- events: the normal path ----------------------------------------------------------------------
def test_valid_batch_is_stored_with_accepted_verdicts(server: FakeTelemetryServer) -> None:
    """A valid batch is answered 202 with one "accepted" verdict per event and stored in order."""
    events = [valid_event() for _ in range(3)]

    response = post_events(server, events)

    assert response.status_code == 202
    assert response.json() == {
        "accepted": 3,
        "rejected": 0,
        "results": [
            {"event_id": e["event_id"], "status": "accepted", "error": None} for e in events
        ],
    }
    assert server.events == events
    assert server.event_ids_received == [e["event_id"] for e in events]
    assert server.duplicates_received == 0


def test_resent_event_is_duplicate_and_stored_once(server: FakeTelemetryServer) -> None:
    """A resent event_id is answered "duplicate", stored once, and counted as a duplicate."""
    first, second = valid_event(), valid_event()
    post_events(server, [first])

    response = post_events(server, [first, second, second])

    verdicts = [r["status"] for r in response.json()["results"]]
    assert verdicts == ["duplicate", "accepted", "duplicate"]
    assert server.events == [first, second]
    assert len(server.event_ids_received) == 4
    assert server.duplicates_received == 2


def test_stored_events_are_copies(server: FakeTelemetryServer) -> None:
    """Changing what ``events`` or a recorded request returned does not change the store."""
    event = valid_event()
    post_events(server, [event])

    server.events[0]["model"] = "changed"
    server.requests[0].json["events"][0]["model"] = "changed too"

    assert server.events == [event]


def test_event_built_by_the_sdk_is_accepted(server: FakeTelemetryServer) -> None:
    """An event serialised by the SDK's own codec passes the fake's independent validation."""
    event = TaskCompletionEvent(
        instance_id=uuid.uuid4(),
        event_id=uuid.uuid4(),
        timestamp=datetime.now(timezone.utc),
        task_duration_ms=10,
        task_type=_enums.TaskType.TESTING,
        complexity=_enums.Complexity.LOW,
        harness=_enums.Harness.AIDER,
        model="m",
        provider=_enums.Provider.OPENAI,
        estimated_input_tokens=1,
        estimated_output_tokens=2,
        actual_input_tokens=3,
        actual_output_tokens=4,
        estimated_cost_usd_micros=5,
        actual_cost_usd_micros=6,
        quality_gate_passed=False,
        quality_gates_run=[_enums.QualityGate.TEST, _enums.QualityGate.LINT],
        quality_gates_failed=[_enums.QualityGate.TEST],
        context_compactions=1,
        context_rotations=0,
        context_utilization_final=1.0,
        outcome=_enums.Outcome.PARTIAL,
    )

    response = post_events(server, [event_to_dict(event)])

    assert response.json()["results"][0]["status"] == "accepted"


def test_invalid_event_is_rejected_per_event_naming_the_field(server: FakeTelemetryServer) -> None:
    """In per-event mode an invalid event gets a "rejected" verdict naming the field."""
    good, bad = valid_event(), valid_event(retry_count=21)

    response = post_events(server, [good, bad])

    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["results"][1]["status"] == "rejected"
    assert body["results"][1]["error"].startswith("retry_count: ")
    assert server.events == [good]


def test_422_mode_names_the_invalid_index_and_stores_nothing() -> None:
    """With reject_invalid="422" one bad event refuses the batch, FastAPI style, with its index."""
    with FakeTelemetryServer(reject_invalid="422") as server:
        events = [valid_event(), valid_event(), valid_event(retry_count=99)]

        response = post_events(server, events)

        assert response.status_code == 422
        assert [item["loc"] for item in response.json()["detail"]] == [
            ["body", "events", 2, "retry_count"]
        ]
        assert server.events == []
        assert post_events(server, events[:2]).status_code == 202
        assert len(server.events) == 2


def test_reject_invalid_must_be_a_known_mode() -> None:
    """An unknown reject_invalid mode is refused, naming the allowed ones."""
    with pytest.raises(ValueError, match="'per-event' or '422'"):
        FakeTelemetryServer(reject_invalid="drop")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe", b'{"evts": []}', b'{"events": []}'],
    ids=["bad-json", "bad-utf8", "no-events", "empty"],
)
def test_bad_envelope_is_400(server: FakeTelemetryServer, body: bytes) -> None:
    """An unreadable envelope is a 400 with a text detail and stores nothing."""
    response = requests.post(
        server.url + EVENTS_PATH,
        data=body,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        timeout=5,
    )

    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    assert server.events == []


def test_gzip_body_is_judged_and_recorded_plain(server: FakeTelemetryServer) -> None:
    """A gzip body is accepted; the recorded body is the decompressed JSON."""
    event = valid_event()
    plain = json.dumps({"events": [event]}).encode()

    response = requests.post(
        server.url + EVENTS_PATH,
        data=gzip.compress(plain),
        headers={"Authorization": f"Bearer {KEY}", "Content-Encoding": "gzip"},
        timeout=5,
    )

    assert response.status_code == 202
    assert server.events == [event]
    recorded = server.requests[0]
    assert (recorded.body, recorded.json) == (plain, {"events": [event]})
    assert recorded.headers["content-encoding"] == "gzip"  # lookup ignores case


def test_body_over_the_limit_is_413() -> None:
    """A body above max_body_bytes, raw or once decompressed, is answered 413 and not stored."""
    with FakeTelemetryServer(max_body_bytes=2_000) as server:
        events = [valid_event() for _ in range(5)]  # about 4 kB of JSON
        headers = {"Authorization": f"Bearer {KEY}", "Content-Encoding": "gzip"}
        bomb = gzip.compress(json.dumps({"events": events}).encode())
        assert len(bomb) < 2_000

        plain = post_events(server, events)
        zipped = requests.post(server.url + EVENTS_PATH, data=bomb, headers=headers, timeout=5)

        assert (plain.status_code, zipped.status_code) == (413, 413)
        assert "detail" in plain.json()
        assert server.events == []
        assert post_events(server, events[:1]).status_code == 202


# --- events: authentication -----------------------------------------------------------------------
def test_missing_or_malformed_key_is_401_but_ids_are_received(server: FakeTelemetryServer) -> None:
    """Without a well-formed key the batch is refused 401, not stored, yet its ids are counted."""
    event = valid_event()

    response = post_events(server, [event], key=None)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert server.events == []
    assert server.event_ids_received == [event["event_id"]]


def test_wrong_key_is_403_until_set_api_key_accepts_it() -> None:
    """With a configured key another well-formed key is 403; set_api_key changes the key."""
    with FakeTelemetryServer(api_key=KEY) as server:
        event = valid_event()

        assert post_events(server, [event], key=OTHER_KEY).status_code == 403
        assert post_events(server, [event], key=None).status_code == 401
        server.set_api_key(OTHER_KEY)
        assert post_events(server, [event], key=KEY).status_code == 403
        assert post_events(server, [event], key=OTHER_KEY).status_code == 202

        assert server.events == [event]
        assert server.event_ids_received == [event["event_id"]] * 4


# --- scripted replies -----------------------------------------------------------------------------
def test_scripted_statuses_then_normal_behaviour(server: FakeTelemetryServer) -> None:
    """Scripted replies are used one per request, with their headers, then normal replies resume."""
    server.script(
        ScriptedReply(status=429, headers={"Retry-After": "2"}),
        ScriptedReply(status=503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
    )
    event = valid_event()

    first, second, third = (post_events(server, [event]) for _ in range(3))

    assert (first.status_code, second.status_code, third.status_code) == (429, 503, 202)
    assert first.headers["Retry-After"] == "2"
    assert second.headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert first.json() == {"detail": "Too Many Requests (scripted)"}
    assert third.json()["results"][0]["status"] == "accepted"
    assert server.events == [event]
    assert [r.status for r in server.requests] == [429, 503, 202]
    assert server.duplicates_received == 1


def test_script_replaces_the_queue_and_empty_script_clears_it(
    server: FakeTelemetryServer,
) -> None:
    """script() replaces replies still queued; script() with none restores normal replies."""
    server.script(ScriptedReply(status=500), ScriptedReply(status=500))
    server.script(ScriptedReply(status=503))

    first = post_events(server, [valid_event()])
    server.script(ScriptedReply(status=500))
    server.script()
    second = post_events(server, [valid_event()])

    assert (first.status_code, second.status_code) == (503, 202)


def test_scripted_error_with_store_keeps_the_events(server: FakeTelemetryServer) -> None:
    """store=True on a 500 stores the events anyway, so the client's resend is a duplicate."""
    server.script(ScriptedReply(status=500, store=True))
    event = valid_event()

    assert post_events(server, [event]).status_code == 500
    resend = post_events(server, [event])

    assert resend.json()["results"][0]["status"] == "duplicate"
    assert server.events == [event]


def test_scripted_custom_bodies(server: FakeTelemetryServer) -> None:
    """A custom body is sent verbatim (stored only if store=True); a bare 422 lists real errors."""
    kept, lost, bad = valid_event(), valid_event(), valid_event(model="")
    server.script(
        ScriptedReply(status=200, body=b"not json at all"),
        ScriptedReply(status=202, body={"accepted": 1}, store=True),
        ScriptedReply(status=422),
    )

    garbage = post_events(server, [lost])
    custom = post_events(server, [kept])
    refused = post_events(server, [kept, bad])

    assert (garbage.status_code, garbage.content) == (200, b"not json at all")
    assert custom.json() == {"accepted": 1}
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "events", 1, "model"]
    assert server.events == [kept]


def test_scripted_2xx_without_body_processes_normally(server: FakeTelemetryServer) -> None:
    """A scripted 200 without a body answers real verdicts and stores, with scripted headers."""
    server.script(ScriptedReply(status=200, headers={"X-Test": "yes"}))
    event = valid_event()

    response = post_events(server, [event])

    assert (response.status_code, response.headers["X-Test"]) == (200, "yes")
    assert response.json()["accepted"] == 1
    assert server.events == [event]


def test_drop_resets_without_reply_and_store_keeps_the_events(server: FakeTelemetryServer) -> None:
    """drop=True reads the request then resets the connection; store=True keeps the events."""
    server.script(ScriptedReply(drop=True), ScriptedReply(drop=True, store=True))
    lost, kept = valid_event(), valid_event()

    with pytest.raises(requests.ConnectionError):
        post_events(server, [lost])
    with pytest.raises(requests.ConnectionError):
        post_events(server, [kept])

    assert server.events == [kept]
    assert [r.status for r in server.requests] == [0, 0]
    assert post_events(server, [lost]).status_code == 202  # the server is still alive


def test_cut_reply_is_lost_but_recorded_with_its_status(server: FakeTelemetryServer) -> None:
    """cut_after ends the reply mid-way: the client fails, nothing is stored unless store=True."""
    server.script(ScriptedReply(cut_after=30), ScriptedReply(cut_after=30, store=True))
    lost, kept = valid_event(), valid_event()

    for event in (lost, kept):
        with pytest.raises(requests.ConnectionError):
            post_events(server, [event])

    assert server.events == [kept]
    assert [r.status for r in server.requests] == [202, 202]


def test_hang_is_released_by_stop(caplog: pytest.LogCaptureFixture) -> None:
    """A hanging request gets no reply until stop(), which frees the client with a reset."""
    server = FakeTelemetryServer().start()
    try:
        server.script(ScriptedReply(hang=True))
        client, errors = in_thread(lambda: post_events(server, [valid_event()], timeout=20))
        assert server.wait_for_requests(1)

        with caplog.at_level(logging.WARNING, logger="mosaic_telemetry.testing"):
            server.stop()

        client.join(60)
        assert len(errors) == 1
        assert isinstance(errors[0], requests.ConnectionError)
        assert not isinstance(errors[0], requests.Timeout)  # released, not timed out
        assert server.requests[0].status == 0
        assert handler_threads(port_of(server)) == []
        assert [r for r in caplog.records if r.name.startswith("mosaic_telemetry")] == []
    finally:
        server.stop()


def test_delay_holds_the_reply_and_records_on_arrival(server: FakeTelemetryServer) -> None:
    """delay postpones the reply by at least that long after the request was recorded."""
    server.script(ScriptedReply(delay=0.3))

    response = post_events(server, [valid_event()])
    replied = time.monotonic()

    assert response.status_code == 202
    assert replied - server.requests[0].at >= 0.3  # a floor: a busy machine only adds to it


def test_delay_past_client_timeout_still_stores(server: FakeTelemetryServer) -> None:
    """A reply slower than the client's timeout is lost, yet the events are stored (resend: dup)."""
    server.script(ScriptedReply(delay=3600))
    event = valid_event()

    with pytest.raises(requests.ReadTimeout):
        post_events(server, [event], timeout=0.2)

    assert server.events == [event]
    assert post_events(server, [event]).json()["results"][0]["status"] == "duplicate"


def test_delay_is_cut_short_by_stop() -> None:
    """stop() does not wait out a long delay: the client sees a reset and the status becomes 0."""
    server = FakeTelemetryServer().start()
    try:
        server.script(ScriptedReply(delay=3600))
        client, errors = in_thread(lambda: post_events(server, [valid_event()], timeout=20))
        assert server.wait_for_requests(1)
        assert server.requests[0].status == 202  # what it would have answered

        server.stop()

        client.join(60)
        assert isinstance(errors[0], requests.ConnectionError)
        assert not isinstance(errors[0], requests.Timeout)
        assert server.requests[0].status == 0
    finally:
        server.stop()


# --- waiting, lifecycle ---------------------------------------------------------------------------
def test_wait_for_events_wakes_on_arrival(server: FakeTelemetryServer) -> None:
    """wait_for_events returns True once events from other threads arrive, False on timeout."""
    senders = [
        in_thread(lambda: post_events(server, [valid_event(), valid_event()]))[0] for _ in range(8)
    ]

    assert server.wait_for_events(16, timeout=30)
    assert server.wait_for_requests(8, timeout=30)
    for sender in senders:
        sender.join(30)
    assert len({e["event_id"] for e in server.events}) == 16
    assert server.wait_for_events(17, timeout=0.05) is False


def test_restart_keeps_port_and_state() -> None:
    """A stopped server refuses connections; restarted, it has the same URL and its events."""
    server = FakeTelemetryServer().start()
    try:
        event = valid_event()
        post_events(server, [event])
        url = server.url
        server.stop()
        assert not server.is_running

        with pytest.raises(requests.ConnectionError):
            post_events(server, [valid_event()], timeout=2)

        assert server.start() is server
        assert server.start() is server  # a no-op when running
        assert server.url == url
        assert post_events(server, [event]).json()["results"][0]["status"] == "duplicate"
    finally:
        server.stop()


def test_reset_forgets_everything(server: FakeTelemetryServer) -> None:
    """reset() clears events, requests, received ids, scripts, seeded predictions and queries."""
    server.set_prediction(QUERY, {"prediction": None, "metadata": {"sample_size": 9}})
    server.script(ScriptedReply(status=500))
    post_queries(server, [QUERY])
    event = valid_event()
    post_events(server, [event], key=None)

    server.reset()

    assert (server.events, server.requests, server.prediction_queries) == ([], [], [])
    assert (server.event_ids_received, server.duplicates_received) == ([], 0)
    assert post_events(server, [event]).status_code == 202  # script gone, id not known
    assert post_queries(server, [QUERY]).json()["results"][0]["metadata"]["sample_size"] == 0


def test_url_before_start_raises_and_repr_counts() -> None:
    """An unstarted server on port 0 has no URL yet; repr shows the state and counts."""
    server = FakeTelemetryServer()
    with pytest.raises(RuntimeError, match="not been started"):
        _ = server.url
    assert repr(server) == "<FakeTelemetryServer not started events=0 requests=0>"


def test_ipv6_loopback_url_is_bracketed() -> None:
    """On ::1 the URL brackets the host and requests reach the server."""
    try:
        server = FakeTelemetryServer(host="::1").start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert server.url.startswith("http://[::1]:")
        assert post_events(server, [valid_event()]).status_code == 202
    finally:
        server.stop()


# --- other paths, records -------------------------------------------------------------------------
def test_unknown_path_is_404_and_wrong_method_405(server: FakeTelemetryServer) -> None:
    """Paths outside wire-v1 are 404; a GET on a wire-v1 path is 405; both are recorded."""
    missing = requests.post(server.url + "/v1/events", json={}, timeout=5)
    wrong = requests.get(server.url + EVENTS_PATH, timeout=5)

    assert (missing.status_code, wrong.status_code) == (404, 405)
    assert wrong.headers["Allow"] == "POST"
    assert [(r.method, r.path, r.status) for r in server.requests] == [
        ("POST", "/v1/events", 404),
        ("GET", EVENTS_PATH, 405),
    ]


def test_recorded_request_fields(server: FakeTelemetryServer) -> None:
    """A RecordedRequest carries method, path, headers, body, parsed JSON, status and time."""
    before = time.monotonic()
    post_events(server, [valid_event()])

    (recorded,) = server.requests

    assert isinstance(recorded, RecordedRequest)
    assert (recorded.method, recorded.path, recorded.status) == ("POST", EVENTS_PATH, 202)
    assert recorded.headers["Authorization"] == f"Bearer {KEY}"
    assert json.loads(recorded.body) == recorded.json
    assert before <= recorded.at <= time.monotonic()


# --- predictions ----------------------------------------------------------------------------------
def test_predictions_seeded_default_and_recorded(server: FakeTelemetryServer) -> None:
    """Seeded queries get their response, others the "no data" default; all queries are recorded."""
    seeded = PredictionQuery(task_type="testing", model="m1", provider="openai", complexity="low")
    seeded_dict = {"task_type": "testing", "model": "m1", "provider": "openai", "complexity": "low"}
    other = {"task_type": "planning", "model": "m2", "provider": "google", "complexity": "high"}
    answer: dict[str, Any] = {
        "prediction": {"input_tokens": {"p10": 1, "p25": 2, "median": 3, "p75": 4, "p90": 5}},
        "metadata": {"sample_size": 42, "fallback_level": 0, "confidence": "high"},
    }
    server.set_prediction(seeded, answer)

    response = post_queries(server, [other, seeded_dict])

    assert response.status_code == 200
    default, found = response.json()["results"]
    assert found == answer
    assert default["prediction"] is None
    assert default["metadata"]["fallback_note"] == "no data"
    assert server.prediction_queries == [other, seeded_dict]
    assert "Authorization" not in server.requests[0].headers


def test_bad_prediction_request_is_400_and_not_recorded(server: FakeTelemetryServer) -> None:
    """An incomplete query is a 400 and no query is recorded."""
    response = post_queries(server, [{"task_type": "testing"}])

    assert response.status_code == 400
    assert server.prediction_queries == []


def test_scripted_prediction_reply(server: FakeTelemetryServer) -> None:
    """script_predictions scripts the predictions endpoint only; the query is still recorded."""
    server.script_predictions(ScriptedReply(status=503, headers={"Retry-After": "1"}))

    first, second = post_queries(server, [QUERY]), post_queries(server, [QUERY])

    assert (first.status_code, second.status_code) == (503, 200)
    assert first.headers["Retry-After"] == "1"
    assert server.prediction_queries == [QUERY, QUERY]
    assert post_events(server, [valid_event()]).status_code == 202
    assert [r.path for r in server.requests] == [PREDICTIONS_PATH] * 2 + [EVENTS_PATH]


# --- simulated conditions, the read endpoint, the request hook ------------------------------------
def test_latency_holds_every_reply() -> None:
    """latency: each reply leaves no sooner than that long after the request was recorded."""
    with FakeTelemetryServer(latency=0.2) as server:
        response = post_events(server, [valid_event()])
        replied = time.monotonic()

        assert response.status_code == 202
        assert replied - server.requests[0].at >= 0.2  # a floor: a busy machine only adds to it


def test_fail_rate_answers_503_unstored_and_scripts_come_first() -> None:
    """With fail_rate=1 every unscripted batch is a 503 that stores nothing; a script wins."""
    with FakeTelemetryServer(fail_rate=1.0) as server:
        event = valid_event()
        server.script(ScriptedReply(status=202))

        scripted = post_events(server, [event])
        failed = post_events(server, [valid_event()])
        predicted = post_queries(server, [QUERY])

        assert scripted.status_code == 202
        assert (failed.status_code, failed.json()) == (
            503,
            {"detail": "simulated failure (fail_rate)"},
        )
        assert predicted.status_code == 200
        assert server.events == [event]
        assert len(server.event_ids_received) == 2


def test_fail_rate_with_a_seed_repeats_the_same_failures() -> None:
    """Two servers with the same seed fail the same batches."""

    def statuses() -> list[int]:
        with FakeTelemetryServer(fail_rate=0.5, seed=3) as server, requests.Session() as s:
            return [post_events(server, [valid_event()], session=s).status_code for _ in range(20)]

    first = statuses()
    assert first == statuses()
    assert set(first) == {202, 503}


def test_read_endpoint_lists_stored_events_unrecorded() -> None:
    """GET /_fake/events returns the stored events as JSON and is not itself recorded."""
    with FakeTelemetryServer(read_endpoint=True) as server:
        events = [valid_event(), valid_event()]
        post_events(server, events)

        listed = requests.get(server.url + "/_fake/events", timeout=5)
        wrong = requests.post(server.url + "/_fake/events", timeout=5)

        assert (listed.status_code, listed.json()) == (200, events)
        assert (wrong.status_code, wrong.headers["Allow"]) == (405, "GET")
        assert [r.path for r in server.requests] == [EVENTS_PATH]


def test_read_endpoint_is_off_by_default(server: FakeTelemetryServer) -> None:
    """Without read_endpoint the path is unknown, like any path outside wire-v1."""
    assert requests.get(server.url + "/_fake/events", timeout=5).status_code == 404


def test_on_request_sees_each_record_with_its_reply(caplog: pytest.LogCaptureFixture) -> None:
    """on_request gets every recorded request, reply bytes included; a failing hook is logged."""
    seen: list[RecordedRequest] = []

    def hook(record: RecordedRequest) -> None:
        seen.append(record)
        if record.path != EVENTS_PATH:
            raise RuntimeError("hook bug")

    with FakeTelemetryServer(on_request=hook) as server:
        response = post_events(server, [valid_event()])
        with caplog.at_level(logging.ERROR, logger="mosaic_telemetry.testing"):
            missing = requests.get(server.url + "/elsewhere", timeout=5)

    assert [r.path for r in seen] == [EVENTS_PATH, "/elsewhere"]
    assert seen[0].reply == response.content
    assert missing.status_code == 404
    assert any("on_request" in r.getMessage() for r in caplog.records)
