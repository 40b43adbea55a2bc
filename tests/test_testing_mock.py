"""Tests of mosaic_telemetry.testing.mock: MockTransport, the transport seam as a function."""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry import TelemetryClient, TelemetryConfig, TransportError
from mosaic_telemetry._delivery.seam import Transport
from mosaic_telemetry.testing import (
    MockTransport,
    TransportRequest,
    TransportResponse,
    example_event_builder,
)

from .fake_wire import EVENTS_PATH, KEY, OTHER_KEY, PREDICTIONS_PATH, QUERY, valid_event
from .helpers import INSTANCE_ID

BASE = "https://telemetry.example"


def events_request(
    events: list[Any], *, key: str | None = KEY, gzipped: bool = False
) -> TransportRequest:
    """A POST of ``events`` as the SDK would build it."""
    body = json.dumps({"events": events}).encode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    return TransportRequest(method="POST", url=BASE + EVENTS_PATH, headers=headers, content=body)


def ok(_: TransportRequest) -> TransportResponse:
    """A handler that answers 202 with no verdicts."""
    return TransportResponse.from_json(202, {"accepted": 0, "rejected": 0, "results": []})


# --- the transport itself -------------------------------------------------------------------------
def test_is_a_transport_and_returns_the_handler_reply() -> None:
    """MockTransport satisfies the seam's protocol and returns exactly what the handler returns."""
    reply = TransportResponse(status_code=503, headers={"Retry-After": "7"}, content=b"busy")
    transport = MockTransport(lambda request: reply)

    assert isinstance(transport, Transport)
    assert transport.handle_request(events_request([valid_event()])) is reply


def test_records_every_request_in_order_even_when_the_handler_fails() -> None:
    """Each request is recorded before the handler runs, so a failed send is still seen."""

    def flaky(request: TransportRequest) -> TransportResponse:
        if request.json()["events"][0]["retry_count"] == 1:
            raise TransportError("connection reset")
        return ok(request)

    transport = MockTransport(flaky)
    first, second = events_request([valid_event(retry_count=1)]), events_request([valid_event()])

    with pytest.raises(TransportError, match="connection reset"):
        transport.handle_request(first)
    transport.handle_request(second)

    assert transport.requests == [first, second]


def test_other_handler_errors_propagate_unchanged() -> None:
    """A bug in the handler is not disguised as a network error."""

    def buggy(request: TransportRequest) -> TransportResponse:
        raise KeyError("oops")

    with pytest.raises(KeyError, match="oops"):
        MockTransport(buggy).handle_request(events_request([valid_event()]))


def test_handler_must_be_callable_and_return_a_response() -> None:
    """A non-callable handler, or one that returns something else, is refused by name."""
    with pytest.raises(TypeError, match="handler must be callable, got dict"):
        MockTransport({})  # type: ignore[arg-type]
    transport = MockTransport(lambda request: {"status": 202})  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="must return a TransportResponse, got dict"):
        transport.handle_request(events_request([valid_event()]))


def test_close_is_recorded_and_requests_still_work() -> None:
    """close() marks the transport closed; a restarted client may keep using it."""
    transport = MockTransport(ok)
    assert not transport.closed

    transport.close()

    assert transport.closed
    assert transport.handle_request(events_request([valid_event()])).status_code == 202
    assert repr(transport) == "<MockTransport requests=1 closed=True>"


def test_is_thread_safe_and_wait_for_requests_wakes() -> None:
    """Requests from many threads are all recorded exactly once; a waiter wakes on the count."""
    transport = MockTransport(ok)
    requests = [events_request([valid_event()]) for _ in range(400)]
    waiter_saw: list[bool] = []
    waiter = threading.Thread(target=lambda: waiter_saw.append(transport.wait_for_requests(400)))
    waiter.start()

    workers = [
        threading.Thread(target=lambda part=part: [transport.handle_request(r) for r in part])
        for part in (requests[i::8] for i in range(8))
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    waiter.join()

    assert waiter_saw == [True]
    assert sorted(map(id, transport.requests)) == sorted(map(id, requests))
    assert transport.wait_for_requests(401, timeout=0.01) is False


def test_sent_events_lists_every_event_of_every_batch() -> None:
    """sent_events flattens the events of events requests, resends included, skipping others."""
    transport = MockTransport(ok)
    first, second = valid_event(), valid_event()
    transport.handle_request(events_request([first, second]))
    transport.handle_request(events_request([first], gzipped=True))
    transport.handle_request(
        TransportRequest(method="POST", url=BASE + PREDICTIONS_PATH, content=b'{"queries": []}')
    )
    transport.handle_request(TransportRequest(method="POST", url=BASE + EVENTS_PATH, content=b"{"))

    assert transport.sent_events == [first, second, first]


# --- MockTransport.accepting() --------------------------------------------------------------------
def test_accepting_gives_per_event_verdicts_and_dedups() -> None:
    """accepting() judges like the fake server: accepted, duplicate on resend, rejected named."""
    transport = MockTransport.accepting()
    good, bad = valid_event(), valid_event(model="")

    first = transport.handle_request(events_request([good, bad]))
    again = transport.handle_request(events_request([good], gzipped=True))

    assert first.status_code == 202
    results = first.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected"]
    assert results[1]["error"].startswith("model: ")
    assert again.json()["results"] == [
        {"event_id": good["event_id"], "status": "duplicate", "error": None}
    ]


def test_accepting_checks_the_key() -> None:
    """Without a well-formed key the answer is 401; with an expected key another one is 403."""
    assert MockTransport.accepting().handle_request(events_request([valid_event()], key=None)) == (
        TransportResponse.from_json(
            401,
            {"detail": "missing or malformed Authorization header (Bearer <64 hex>)"},
            headers={"WWW-Authenticate": "Bearer"},
        )
    )
    strict = MockTransport.accepting(api_key=KEY)
    assert strict.handle_request(events_request([valid_event()], key=OTHER_KEY)).status_code == 403
    assert strict.handle_request(events_request([valid_event()], key=KEY)).status_code == 202


@pytest.mark.parametrize(
    ("method", "path", "content", "status"),
    [
        ("POST", EVENTS_PATH, b"{not json", 400),
        ("POST", EVENTS_PATH, b"\x1f\x8b garbage", 400),
        ("POST", "/v1/elsewhere", b"{}", 404),
        ("GET", EVENTS_PATH, b"", 405),
        ("POST", PREDICTIONS_PATH, b'{"queries": []}', 400),
    ],
    ids=["bad-json", "bad-bytes", "unknown-path", "wrong-method", "no-queries"],
)
def test_accepting_refuses_what_the_server_refuses(
    method: str, path: str, content: bytes, status: int
) -> None:
    """Unreadable bodies, unknown paths and wrong methods get the fake server's statuses."""
    request = TransportRequest(
        method=method, url=BASE + path, headers={"Authorization": f"Bearer {KEY}"}, content=content
    )

    assert MockTransport.accepting().handle_request(request).status_code == status


def test_accepting_refuses_a_broken_gzip_body() -> None:
    """A body that claims gzip but is not is an unreadable envelope (400), not a crash."""
    request = TransportRequest(
        method="POST",
        url=BASE + EVENTS_PATH,
        headers={"Authorization": f"Bearer {KEY}", "Content-Encoding": "gzip"},
        content=b"plainly not gzip",
    )

    assert MockTransport.accepting().handle_request(request).status_code == 400


def test_accepting_answers_predictions_with_no_data() -> None:
    """Each prediction query gets the "no data" answer, in order; no key is needed."""
    request = TransportRequest(
        method="POST",
        url=BASE + "/base" + PREDICTIONS_PATH,
        content=json.dumps({"queries": [QUERY, QUERY]}).encode(),
    )

    reply = MockTransport.accepting().handle_request(request)

    assert reply.status_code == 200
    results = reply.json()["results"]
    assert [r["prediction"] for r in results] == [None, None]
    assert [r["metadata"]["confidence"] for r in results] == ["none", "none"]


def test_accepting_is_thread_safe_about_duplicates() -> None:
    """The same event sent from many threads at once is accepted exactly once."""
    transport = MockTransport.accepting()
    event = valid_event()
    statuses: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def send() -> None:
        start.wait()
        reply = transport.handle_request(events_request([event]))
        with lock:
            statuses.append(reply.json()["results"][0]["status"])

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == ["accepted"] + ["duplicate"] * 7


def test_the_client_delivers_through_accepting(tmp_path: Path) -> None:
    """A real client sends its events through accepting(): judged valid, delivered once."""
    transport = MockTransport.accepting(api_key=KEY)
    config = TelemetryConfig(
        server_url=BASE,
        api_key=KEY,
        instance_id=INSTANCE_ID,
        outbox_path=tmp_path / "outbox.sqlite3",
        submit_interval_seconds=3600,
    )
    events = [example_event_builder(INSTANCE_ID).build() for _ in range(3)]

    with TelemetryClient(config, transport=transport) as client:
        for event in events:
            client.track(event)
        result = client.flush(timeout=30)

    assert (result.delivered, result.remaining, result.dead_lettered) == (3, 0, 0)
    assert [e["event_id"] for e in transport.sent_events] == [str(e.event_id) for e in events]
    assert transport.closed
