"""Tests of mosaic_telemetry.testing: the fake wire-v1 server, over real sockets."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

import pytest
import requests

from mosaic_telemetry import _enums, testing
from mosaic_telemetry._models import EVENT_FIELDS, PredictionQuery, TaskCompletionEvent
from mosaic_telemetry._wire.events import event_to_dict
from mosaic_telemetry._wire.http import EVENTS_PATH, PREDICTIONS_PATH
from mosaic_telemetry.testing import (
    FakeTelemetryServer,
    RecordedRequest,
    ScriptedReply,
    fake_telemetry_server,  # noqa: F401 - the plugin's fixture, used by a test below
)

# The plugin itself (pytest_plugins = ["mosaic_telemetry.testing"]) is exercised in a nested
# pytest run: listing it here would import it after assertion rewriting could apply.
pytest_plugins = ["pytester"]

KEY = "ab" * 32
OTHER_KEY = "cd" * 32


def _now_text(delta: timedelta = timedelta(0)) -> str:
    return (datetime.now(timezone.utc) + delta).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def valid_event(**overrides: Any) -> dict[str, Any]:
    """A schema 1.0 event dict that the server accepts, with ``overrides`` applied."""
    event: dict[str, Any] = {
        "instance_id": str(uuid.uuid4()),
        "event_id": str(uuid.uuid4()),
        "timestamp": _now_text(),
        "task_duration_ms": 1234,
        "task_type": "implementation",
        "complexity": "medium",
        "harness": "claude_code",
        "model": "claude-sonnet-4",
        "provider": "anthropic",
        "estimated_input_tokens": 1000,
        "estimated_output_tokens": 500,
        "actual_input_tokens": 1100,
        "actual_output_tokens": 450,
        "estimated_cost_usd_micros": 20_000,
        "actual_cost_usd_micros": 21_000,
        "quality_gate_passed": True,
        "quality_gates_run": ["build", "lint", "test"],
        "quality_gates_failed": [],
        "context_compactions": 0,
        "context_rotations": 0,
        "context_utilization_final": 0.4,
        "outcome": "success",
        "retry_count": 0,
        "language": "python",
        "repo_size_category": "medium",
    }
    event.update(overrides)
    return event


def post_events(
    server: FakeTelemetryServer,
    events: list[Any],
    *,
    key: str | None = KEY,
    timeout: float = 5.0,
    session: requests.Session | None = None,
) -> requests.Response:
    """POST ``{"events": events}`` with a Bearer key (None: no Authorization header)."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    poster = session if session is not None else requests
    return poster.post(
        server.url + EVENTS_PATH, json={"events": events}, headers=headers, timeout=timeout
    )


def post_queries(server: FakeTelemetryServer, queries: list[Any]) -> requests.Response:
    """POST ``{"queries": queries}`` without any Authorization header."""
    return requests.post(server.url + PREDICTIONS_PATH, json={"queries": queries}, timeout=5)


@pytest.fixture
def server() -> Iterator[FakeTelemetryServer]:
    """A started fake server with default settings."""
    with FakeTelemetryServer() as fake:
        yield fake


def _in_thread(target: Any) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``target`` in a started daemon thread; exceptions it raises land in the list."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


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


def test_schema_tables_match_the_sdk() -> None:
    """The fake's hand-written schema (wire-v1 §3/§4) matches the SDK's enums and field order."""
    assert tuple(testing._EVENT_RULES) == EVENT_FIELDS
    pairs: list[tuple[frozenset[str], type[Enum]]] = [
        (testing._TASK_TYPES, _enums.TaskType),
        (testing._COMPLEXITIES, _enums.Complexity),
        (testing._HARNESSES, _enums.Harness),
        (testing._PROVIDERS, _enums.Provider),
        (testing._QUALITY_GATES, _enums.QualityGate),
        (testing._OUTCOMES, _enums.Outcome),
        (testing._REPO_SIZES, _enums.RepoSizeCategory),
    ]
    for wire_strings, enum in pairs:
        assert wire_strings == {member.value for member in enum}, enum.__name__


# --- events: validation ---------------------------------------------------------------------------
INVALID_CASES: list[tuple[str, dict[str, Any]]] = [
    ("instance_id", {"instance_id": "not-a-uuid"}),
    ("event_id", {"event_id": uuid.uuid4().hex}),  # no hyphens: not the canonical form
    ("timestamp", {"timestamp": "2024-01-01T00:00:00"}),  # no time zone
    ("timestamp", {"timestamp": _now_text(timedelta(hours=2))}),  # too far in the future
    ("timestamp", {"timestamp": 1700000000}),
    ("task_duration_ms", {"task_duration_ms": 86_400_001}),
    ("task_duration_ms", {"task_duration_ms": 12.0}),
    ("task_type", {"task_type": "TESTING"}),
    ("complexity", {"complexity": "extreme"}),
    ("harness", {"harness": None}),
    ("model", {"model": ""}),
    ("model", {"model": "m" * 101}),
    ("provider", {"provider": "aws"}),
    ("estimated_input_tokens", {"estimated_input_tokens": True}),  # bools are not ints
    ("actual_output_tokens", {"actual_output_tokens": -1}),
    ("actual_cost_usd_micros", {"actual_cost_usd_micros": 100_000_001}),
    ("quality_gate_passed", {"quality_gate_passed": 1}),
    ("quality_gates_run", {"quality_gates_run": ["build", "build"]}),
    ("quality_gates_run", {"quality_gates_run": ["compile"]}),
    ("quality_gates_failed", {"quality_gates_run": ["build"], "quality_gates_failed": ["lint"]}),
    ("context_compactions", {"context_compactions": 101}),
    ("context_utilization_final", {"context_utilization_final": 1.5}),
    ("context_utilization_final", {"context_utilization_final": False}),
    ("outcome", {"outcome": "crashed"}),
    ("retry_count", {"retry_count": 21}),
    ("language", {"language": "x" * 31}),
    ("repo_size_category", {"repo_size_category": "gigantic"}),
    ("surprise", {"surprise": 1}),  # no extra keys
]


@pytest.mark.parametrize(("field", "overrides"), INVALID_CASES)
def test_invalid_event_is_rejected_naming_the_field(
    server: FakeTelemetryServer, field: str, overrides: dict[str, Any]
) -> None:
    """In per-event mode a schema violation is a "rejected" verdict whose error names the field."""
    good, bad = valid_event(), valid_event(**overrides)

    response = post_events(server, [good, bad])

    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    verdict = body["results"][1]
    assert verdict["status"] == "rejected"
    assert verdict["error"].startswith(f"{field}: ")
    assert server.events == [good]


def test_missing_key_is_rejected_and_nullable_keys_accept_null(
    server: FakeTelemetryServer,
) -> None:
    """Every key is required; only language and repo_size_category may be null."""
    missing = valid_event()
    del missing["retry_count"]
    nulls = valid_event(language=None, repo_size_category=None)

    results = post_events(server, [missing, nulls]).json()["results"]

    assert results[0]["status"] == "rejected"
    assert results[0]["error"] == "retry_count: field required"
    assert results[1]["status"] == "accepted"


def test_timestamps_with_offsets_are_accepted(server: FakeTelemetryServer) -> None:
    """ISO-8601 timestamps with a numeric offset or without fraction are valid."""
    events = [
        valid_event(timestamp="2024-05-01T12:00:00+02:00"),
        valid_event(timestamp="2024-05-01T12:00:00Z"),
        valid_event(timestamp=_now_text(timedelta(minutes=30))),
    ]

    body = post_events(server, events).json()

    assert body["accepted"] == 3


def test_422_mode_names_the_invalid_index_and_stores_nothing() -> None:
    """With reject_invalid="422" one bad event refuses the batch, FastAPI style, with its index."""
    with FakeTelemetryServer(reject_invalid="422") as server:
        events = [valid_event(), valid_event(), valid_event(retry_count=99)]

        response = post_events(server, events)

        assert response.status_code == 422
        detail = response.json()["detail"]
        assert [item["loc"] for item in detail] == [["body", "events", 2, "retry_count"]]
        assert detail[0]["type"] == "value_error"
        assert "0..20" in detail[0]["msg"]
        assert server.events == []
        assert post_events(server, events[:2]).status_code == 202
        assert len(server.events) == 2


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe",
        b'{"evts": []}',
        b'{"events": {}}',
        b"[]",
        b'{"events": []}',
        json.dumps({"events": [valid_event() for _ in range(101)]}).encode(),
    ],
    ids=["bad-json", "bad-utf8", "no-events", "events-not-list", "not-object", "empty", "101"],
)
def test_bad_envelope_is_400(server: FakeTelemetryServer, body: bytes) -> None:
    """An unreadable envelope (bad JSON, no events list, 0 or 101 events) is a 400 with detail."""
    response = requests.post(
        server.url + EVENTS_PATH,
        data=body,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        timeout=5,
    )

    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    assert server.events == []


# --- events: authentication -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "authorization",
    [None, "", f"Basic {KEY}", f"bearer {KEY}", "Bearer short", f"Bearer {KEY}0", f"Bearer {KEY} "],
)
def test_missing_or_malformed_key_is_401(
    server: FakeTelemetryServer, authorization: str | None
) -> None:
    """Without a well-formed ``Bearer <64 hex>`` header the batch is refused 401 and not stored."""
    headers = {} if authorization is None else {"Authorization": authorization}

    response = requests.post(
        server.url + EVENTS_PATH, json={"events": [valid_event()]}, headers=headers, timeout=5
    )

    assert response.status_code == 401
    assert "detail" in response.json()
    assert server.events == []


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


# --- events: body encodings and limits ------------------------------------------------------------
def test_gzip_body_is_decompressed_and_recorded_plain(server: FakeTelemetryServer) -> None:
    """A gzip Content-Encoding body is accepted; the recorded body is the decompressed JSON."""
    event = valid_event()
    plain = json.dumps({"events": [event]}).encode()

    response = requests.post(
        server.url + EVENTS_PATH,
        data=gzip.compress(plain),
        headers={
            "Authorization": f"Bearer {KEY}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
        timeout=5,
    )

    assert response.status_code == 202
    assert server.events == [event]
    recorded = server.requests[0]
    assert recorded.body == plain
    assert recorded.json == {"events": [event]}
    assert recorded.headers["content-encoding"] == "gzip"  # lookup ignores case


def test_chunked_body_is_read(server: FakeTelemetryServer) -> None:
    """A chunked request body (no Content-Length) is reassembled and processed."""
    event = valid_event()
    text = json.dumps({"events": [event]}).encode()

    response = requests.post(
        server.url + EVENTS_PATH,
        data=iter([text[:10], text[10:]]),
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    )

    assert response.status_code == 202
    assert server.events == [event]


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
        assert post_events(server, events[:1]).status_code == 202  # connection still usable


def test_broken_gzip_is_400(server: FakeTelemetryServer) -> None:
    """A body that claims gzip but is not is an unreadable envelope (400)."""
    response = requests.post(
        server.url + EVENTS_PATH,
        data=b"plainly not gzip",
        headers={"Authorization": f"Bearer {KEY}", "Content-Encoding": "gzip"},
        timeout=5,
    )

    assert response.status_code == 400


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


def test_drop_closes_the_connection_without_reply(server: FakeTelemetryServer) -> None:
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


def test_hang_is_released_by_stop() -> None:
    """A hanging request gets no reply until stop(), which returns promptly and frees the client."""
    server = FakeTelemetryServer().start()
    try:
        server.script(ScriptedReply(hang=True))
        client, errors = _in_thread(lambda: post_events(server, [valid_event()], timeout=30))
        assert server.wait_for_requests(1)
        assert client.is_alive()

        stopper, stop_errors = _in_thread(server.stop)
        stopper.join(timeout=1.0)

        assert not stopper.is_alive(), "stop() did not return within 1 s"
        assert stop_errors == []
        client.join(timeout=2.0)
        assert not client.is_alive()
        assert len(errors) == 1
        assert isinstance(errors[0], requests.ConnectionError)
        assert server.requests[0].status == 0
    finally:
        server.stop()


def test_delay_holds_the_reply(server: FakeTelemetryServer) -> None:
    """delay postpones the reply by at least that long; the request is recorded on arrival."""
    server.script(ScriptedReply(delay=0.3))
    started = time.monotonic()

    response = post_events(server, [valid_event()])

    assert response.status_code == 202
    assert time.monotonic() - started >= 0.3
    assert server.requests[0].at - started < 0.3


def test_delay_past_client_timeout_still_stores(server: FakeTelemetryServer) -> None:
    """A reply slower than the client's timeout is lost, yet the events are stored (resend: dup)."""
    server.script(ScriptedReply(delay=1.0))
    event = valid_event()

    with pytest.raises(requests.ReadTimeout):
        post_events(server, [event], timeout=0.2)

    assert server.events == [event]
    assert post_events(server, [event]).json()["results"][0]["status"] == "duplicate"


def test_delay_is_cut_short_by_stop() -> None:
    """stop() does not wait out a long delay: the client sees the connection end, status 0."""
    server = FakeTelemetryServer().start()
    try:
        server.script(ScriptedReply(delay=30))
        client, errors = _in_thread(lambda: post_events(server, [valid_event()], timeout=30))
        assert server.wait_for_requests(1)

        stopper, _ = _in_thread(server.stop)
        stopper.join(timeout=1.0)

        assert not stopper.is_alive()
        client.join(timeout=2.0)
        assert isinstance(errors[0], requests.ConnectionError)
        assert server.requests[0].status == 0
    finally:
        server.stop()


def test_scripted_reply_rejects_contradictions() -> None:
    """A ScriptedReply that both drops and hangs, or has an impossible status, is refused."""
    with pytest.raises(ValueError, match="drop and hang"):
        ScriptedReply(drop=True, hang=True)
    with pytest.raises(ValueError, match="status"):
        ScriptedReply(status=99)


# --- waiting, threads, lifecycle ------------------------------------------------------------------
def test_wait_for_events_wakes_on_arrival(server: FakeTelemetryServer) -> None:
    """wait_for_events returns True once events from other threads arrive, False on timeout."""
    senders = [
        _in_thread(lambda: post_events(server, [valid_event(), valid_event()]))[0] for _ in range(8)
    ]

    assert server.wait_for_events(16, timeout=10)
    assert server.wait_for_requests(8, timeout=10)
    for sender in senders:
        sender.join(timeout=5)
    assert len({e["event_id"] for e in server.events}) == 16
    assert server.wait_for_events(17, timeout=0.05) is False


def test_keep_alive_connections_do_not_delay_stop() -> None:
    """A client's idle keep-alive connection is closed by stop(), which still returns promptly."""
    server = FakeTelemetryServer().start()
    session = requests.Session()
    try:
        for _ in range(3):
            assert post_events(server, [valid_event()], session=session).status_code == 202

        stopper, _ = _in_thread(server.stop)
        stopper.join(timeout=1.0)

        assert not stopper.is_alive()
    finally:
        session.close()
        server.stop()


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

        server.start()
        assert server.url == url
        assert post_events(server, [event]).json()["results"][0]["status"] == "duplicate"
    finally:
        server.stop()


def test_reset_forgets_everything(server: FakeTelemetryServer) -> None:
    """reset() clears events, requests, received ids, scripts, seeded predictions and queries."""
    query = {"task_type": "testing", "model": "m", "provider": "openai", "complexity": "low"}
    server.set_prediction(query, {"prediction": None, "metadata": {"sample_size": 9}})
    server.script(ScriptedReply(status=500))
    post_queries(server, [query])
    event = valid_event()
    post_events(server, [event], key=None)

    server.reset()

    assert (server.events, server.requests, server.prediction_queries) == ([], [], [])
    assert (server.event_ids_received, server.duplicates_received) == ([], 0)
    assert post_events(server, [event]).status_code == 202  # script gone, id not known
    assert post_queries(server, [query]).json()["results"][0]["metadata"]["sample_size"] == 0


def test_url_before_start_raises() -> None:
    """An unstarted server on port 0 has no URL yet."""
    with pytest.raises(RuntimeError, match="not been started"):
        _ = FakeTelemetryServer().url


# --- other paths, robustness, logging -------------------------------------------------------------
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


def test_garbage_on_the_socket_does_not_kill_the_server(server: FakeTelemetryServer) -> None:
    """A non-HTTP client and an abrupt disconnect leave the server serving."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"\x00\x01garbage\r\n\r\n")
        raw.recv(1024)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(b"POST /v1/events/batch HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")

    assert post_events(server, [valid_event()]).status_code == 202


def test_request_lines_go_to_the_debug_logger(
    server: FakeTelemetryServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Request logging goes to the "mosaic_telemetry.testing" logger at DEBUG, never to stderr."""
    with caplog.at_level(logging.DEBUG, logger="mosaic_telemetry.testing"):
        post_events(server, [valid_event()])
        server.stop()  # joins the handler, so its log line has been emitted

    assert any("/v1/events/batch" in r.getMessage() for r in caplog.records)
    assert all(r.name == "mosaic_telemetry.testing" for r in caplog.records)
    assert capfd.readouterr().err == ""


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
    answer = {
        "prediction": {"input_tokens": {"p10": 1, "p25": 2, "median": 3, "p75": 4, "p90": 5}},
        "metadata": {"sample_size": 42, "fallback_level": 0, "confidence": "high"},
    }
    server.set_prediction(seeded, answer)

    response = post_queries(server, [other, seeded_dict])

    assert response.status_code == 200
    default, found = response.json()["results"]
    assert found == answer
    assert default["prediction"] is None
    assert default["metadata"] == {
        "sample_size": 0,
        "fallback_level": 0,
        "confidence": "none",
        "last_updated": None,
        "dimensions_matched": None,
        "fallback_note": "no data",
        "cache_hit": False,
    }
    assert server.prediction_queries == [other, seeded_dict]
    assert "Authorization" not in server.requests[0].headers


@pytest.mark.parametrize(
    "queries",
    [
        [],
        [{"task_type": "testing", "model": "m", "provider": "openai", "complexity": "low"}] * 51,
        [{"task_type": "testing", "model": "m", "provider": "openai"}],
        [{"task_type": "testing", "model": 5, "provider": "openai", "complexity": "low"}],
        ["testing"],
    ],
    ids=["empty", "51", "missing-key", "not-string", "not-object"],
)
def test_bad_prediction_request_is_400(server: FakeTelemetryServer, queries: list[Any]) -> None:
    """0 or >50 queries, or an incomplete query, is a 400 and nothing is recorded."""
    response = post_queries(server, queries)

    assert response.status_code == 400
    assert server.prediction_queries == []


def test_scripted_prediction_reply(server: FakeTelemetryServer) -> None:
    """script_predictions scripts the predictions endpoint only; the query is still recorded."""
    query = {"task_type": "testing", "model": "m", "provider": "openai", "complexity": "low"}
    server.script_predictions(ScriptedReply(status=503, headers={"Retry-After": "1"}))

    first, second = post_queries(server, [query]), post_queries(server, [query])

    assert (first.status_code, second.status_code) == (503, 200)
    assert first.headers["Retry-After"] == "1"
    assert server.prediction_queries == [query, query]
    assert post_events(server, [valid_event()]).status_code == 202


# --- the pytest plugin ----------------------------------------------------------------------------
def test_plugin_fixture_yields_a_started_server(
    fake_telemetry_server: FakeTelemetryServer,  # noqa: F811
) -> None:
    """The fake_telemetry_server fixture yields a running server."""
    assert fake_telemetry_server.is_running
    assert post_events(fake_telemetry_server, [valid_event()]).status_code == 202


def test_plugin_fixture_stops_the_server_after_the_test(pytester: pytest.Pytester) -> None:
    """A user's suite enabling the plugin gets a working server that is stopped after each test."""
    pytester.makeconftest('pytest_plugins = ["mosaic_telemetry.testing"]\n')
    pytester.makepyfile(
        """
        import pathlib

        def test_uses_fixture(fake_telemetry_server):
            pathlib.Path("url.txt").write_text(fake_telemetry_server.url)
            assert fake_telemetry_server.events == []
        """
    )

    result = pytester.runpytest_inprocess(
        "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"
    )

    result.assert_outcomes(passed=1)
    url = (pytester.path / "url.txt").read_text()
    with pytest.raises(requests.ConnectionError):
        requests.post(url + EVENTS_PATH, json={"events": []}, timeout=2)
