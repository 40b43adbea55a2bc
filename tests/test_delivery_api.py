"""The Telemetry API over the requests transport, over real sockets to FakeTelemetryServer."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry._delivery.api import TelemetryApi
from mosaic_telemetry._delivery.transport import RequestsTransport
from mosaic_telemetry._exceptions import TransportError
from mosaic_telemetry._models import PredictionQuery
from mosaic_telemetry._version import get_version
from mosaic_telemetry._wire import http as wire
from mosaic_telemetry._wire.events import batch_body, event_to_json
from mosaic_telemetry._wire.predictions import predictions_body, query_to_dict
from mosaic_telemetry._wire.replies import SendKind, SendResult, Verdict
from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from .helpers import API_KEY, make_events

NOW = 1_700_000_000.0
OTHER_KEY = "cd" * 32


def Transport(
    url: str,
    api_key: str,
    *,
    timeout: float,
    clock: Any = time.time,
    gzip: bool = False,
    retry_after_cap: float = 3600.0,
) -> TelemetryApi:
    """The Telemetry API over a fresh RequestsTransport."""
    return TelemetryApi(
        url,
        api_key,
        transport=RequestsTransport(),
        timeout=timeout,
        clock=clock,
        gzip=gzip,
        retry_after_cap=retry_after_cap,
    )


def texts(count: int) -> list[str]:
    """``count`` valid stored event texts, as the outbox holds them."""
    return [event_to_json(event) for event in make_events(count)]


def invalid_text() -> str:
    """A stored event text the server refuses (negative duration)."""
    data = json.loads(texts(1)[0])
    data["task_duration_ms"] = -1
    return json.dumps(data)


@pytest.fixture
def transport(server: FakeTelemetryServer) -> Iterator[TelemetryApi]:
    """A Transport to the test server with the right key and a short timeout."""
    made = Transport(server.url, API_KEY, timeout=5.0, clock=lambda: NOW)
    yield made
    made.close()


def only_request(server: FakeTelemetryServer) -> Any:
    [request] = server.requests
    return request


# --- 2xx ----------------------------------------------------------------------------------------
def test_202_verdicts_accepted_duplicate_rejected(
    server: FakeTelemetryServer, transport: TelemetryApi
) -> None:
    """A 202 reply is OK and carries each event's verdict: accepted, duplicate and rejected."""
    first, second = texts(2)
    assert SendKind.OK is transport.send_events([first]).kind
    bad = invalid_text()
    result = transport.send_events([first, second, bad])
    ids = [json.loads(text)["event_id"] for text in (first, second, bad)]
    assert (result.kind, result.status) == (SendKind.OK, 202)
    assert result.verdicts is not None
    assert result.verdicts[ids[0]] == Verdict("duplicate", None)
    assert result.verdicts[ids[1]] == Verdict("accepted", None)
    verdict = result.verdicts[ids[2]]
    status, error = verdict.status, verdict.error
    assert status == "rejected"
    assert error is not None
    assert "task_duration_ms" in error
    assert len(server.events) == 2


def test_2xx_without_results_is_all_accepted(
    server: FakeTelemetryServer, transport: TelemetryApi, caplog: pytest.LogCaptureFixture
) -> None:
    """A 2xx whose body has no ``results`` is OK with verdicts None and no warning."""
    server.script(ScriptedReply(status=202, body={"accepted": 2, "rejected": 0}))
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        result = transport.send_events(texts(2))
    assert SendResult(kind=SendKind.OK, status=202, verdicts=None) == result
    assert caplog.records == []


def test_204_empty_is_all_accepted_without_warning(
    server: FakeTelemetryServer, transport: TelemetryApi, caplog: pytest.LogCaptureFixture
) -> None:
    """A 204 with no body is OK, all accepted, and not worth a warning."""
    server.script(ScriptedReply(status=204, body=b""))
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        result = transport.send_events(texts(1))
    assert (result.kind, result.status, result.verdicts) == (SendKind.OK, 204, None)
    assert caplog.records == []


@pytest.mark.parametrize(
    "body", [b"<html>thanks</html>", b"", {"results": "all good"}, [1, 2]], ids=repr
)
def test_malformed_2xx_is_accepted_with_a_warning(
    server: FakeTelemetryServer,
    transport: TelemetryApi,
    caplog: pytest.LogCaptureFixture,
    body: Any,
) -> None:
    """A 2xx with a non-JSON or wrong-typed body counts as accepted (verdicts None), warned."""
    server.script(ScriptedReply(status=200, body=body))
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        result = transport.send_events(texts(1))
    assert (result.kind, result.status, result.verdicts) == (SendKind.OK, 200, None)
    assert len(caplog.records) == 1
    assert "unreadable body" in caplog.records[0].getMessage()


def test_malformed_2xx_warning_is_rate_limited(
    server: FakeTelemetryServer, transport: TelemetryApi, caplog: pytest.LogCaptureFixture
) -> None:
    """Repeated malformed 2xx replies log one warning, not one per batch."""
    server.script(*[ScriptedReply(status=200, body=b"nope")] * 3)
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        for _ in range(3):
            assert SendKind.OK is transport.send_events(texts(1)).kind
    assert len(caplog.records) == 1


def test_huge_reply_is_capped(server: FakeTelemetryServer, transport: TelemetryApi) -> None:
    """A ~3 MB 2xx reply is cut at MAX_REPLY_BYTES: verdicts hidden past the cap stay unread."""
    event = texts(1)[0]
    event_id = json.loads(event)["event_id"]
    results = [{"event_id": event_id, "status": "rejected", "error": "x"}]
    body = json.dumps({"pad": "x" * 3_000_000, "results": results}).encode()
    assert len(body) > 2 * wire.MAX_REPLY_BYTES
    server.script(ScriptedReply(status=202, body=body))
    result = transport.send_events([event])
    # had the whole body been read, the "rejected" verdict at its end would be here
    assert (result.kind, result.status, result.verdicts) == (SendKind.OK, 202, None)


# --- 4xx ----------------------------------------------------------------------------------------
def test_400_is_bad_request_with_detail(
    server: FakeTelemetryServer, transport: TelemetryApi
) -> None:
    """An unreadable envelope gets the server's 400, classified BAD_REQUEST with its detail."""
    result = transport.send_events(["{not json"])
    assert (result.kind, result.status) == (SendKind.BAD_REQUEST, 400)
    assert result.detail == "HTTP 400: body is not valid JSON"


def test_401_is_auth(server: FakeTelemetryServer) -> None:
    """A malformed key is answered 401, classified AUTH; the detail never holds the key."""
    bad_key = "not-a-key"
    result = Transport(server.url, bad_key, timeout=5.0).send_events(texts(1))
    assert (result.kind, result.status) == (SendKind.AUTH, 401)
    assert result.detail.startswith("HTTP 401: ")
    assert bad_key not in result.detail


def test_403_is_auth(server: FakeTelemetryServer) -> None:
    """A well-formed key the server does not know is answered 403, classified AUTH."""
    result = Transport(server.url, OTHER_KEY, timeout=5.0).send_events(texts(1))
    assert (result.kind, result.status) == (SendKind.AUTH, 403)
    assert OTHER_KEY not in result.detail
    assert server.events == []


def test_413_is_too_large() -> None:
    """A body over the server's limit is answered 413, classified TOO_LARGE."""
    with FakeTelemetryServer(api_key=API_KEY, max_body_bytes=2_000) as small:
        result = Transport(small.url, API_KEY, timeout=5.0).send_events(texts(10))
    assert (result.kind, result.status) == (SendKind.TOO_LARGE, 413)
    assert "exceeds the limit" in result.detail


def test_422_names_invalid_indices() -> None:
    """A FastAPI-style 422 is INVALID with the refused batch indices and their reasons."""
    with FakeTelemetryServer(api_key=API_KEY, reject_invalid="422") as strict:
        batch = [*texts(1), invalid_text(), *texts(1), invalid_text()]
        result = Transport(strict.url, API_KEY, timeout=5.0).send_events(batch)
        assert strict.events == []
    assert (result.kind, result.status) == (SendKind.INVALID, 422)
    assert sorted(result.invalid) == [1, 3]
    assert "task_duration_ms" in result.invalid[1]


def test_422_without_readable_indices_is_empty(
    server: FakeTelemetryServer, transport: TelemetryApi
) -> None:
    """A 422 whose body names no index gives INVALID with an empty map (the worker bisects)."""
    server.script(ScriptedReply(status=422, body={"detail": "something is invalid"}))
    result = transport.send_events(texts(3))
    assert (
        SendResult(
            kind=SendKind.INVALID, status=422, invalid={}, detail="HTTP 422: something is invalid"
        )
        == result
    )


@pytest.mark.parametrize("status", [301, 302, 307, 404, 405, 409, 418])
def test_redirects_and_other_4xx_are_client_errors(
    server: FakeTelemetryServer, transport: TelemetryApi, status: int
) -> None:
    """3xx (never followed) and unlisted 4xx are CLIENT_ERROR after exactly one request."""
    server.script(ScriptedReply(status=status, headers={"Location": server.url + "/elsewhere"}))
    result = transport.send_events(texts(1))
    assert (SendKind.CLIENT_ERROR, status) == (result.kind, result.status)
    assert len(server.requests) == 1


# --- retryable ----------------------------------------------------------------------------------
def test_429_with_retry_after_seconds(server: FakeTelemetryServer, transport: TelemetryApi) -> None:
    """A 429 is RETRY with Retry-After delta-seconds as retry_after."""
    server.script(ScriptedReply(status=429, headers={"Retry-After": "17"}))
    result = transport.send_events(texts(1))
    assert (result.kind, result.status, result.retry_after) == (SendKind.RETRY, 429, 17.0)


def test_429_with_retry_after_http_date(
    server: FakeTelemetryServer, transport: TelemetryApi
) -> None:
    """A 429 with an HTTP-date Retry-After is read against the injected clock."""
    when = format_datetime(datetime.fromtimestamp(NOW + 90, tz=timezone.utc), usegmt=True)
    server.script(ScriptedReply(status=429, headers={"Retry-After": when}))
    result = transport.send_events(texts(1))
    assert (result.kind, result.status, result.retry_after) == (SendKind.RETRY, 429, 90.0)


def test_retry_after_is_capped(server: FakeTelemetryServer) -> None:
    """A Retry-After beyond retry_after_cap is clamped to the cap."""
    capped = Transport(server.url, API_KEY, timeout=5.0, retry_after_cap=30.0)
    server.script(ScriptedReply(status=429, headers={"Retry-After": "86400"}))
    assert capped.send_events(texts(1)).retry_after == 30.0


def test_429_without_retry_after(server: FakeTelemetryServer, transport: TelemetryApi) -> None:
    """A 429 without (or with garbage) Retry-After is RETRY with retry_after None."""
    server.script(
        ScriptedReply(status=429), ScriptedReply(status=429, headers={"Retry-After": "?"})
    )
    for _ in range(2):
        result = transport.send_events(texts(1))
        assert (result.kind, result.status, result.retry_after) == (SendKind.RETRY, 429, None)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retry(server: FakeTelemetryServer, transport: TelemetryApi, status: int) -> None:
    """Any 5xx is RETRY, with Retry-After honoured when present."""
    server.script(ScriptedReply(status=status, headers={"Retry-After": "3"}))
    result = transport.send_events(texts(1))
    assert (SendKind.RETRY, status, 3.0) == (result.kind, result.status, result.retry_after)
    assert result.detail.startswith(f"HTTP {status}")


def test_503_without_body_is_retry(server: FakeTelemetryServer, transport: TelemetryApi) -> None:
    """A 503 with an empty body is RETRY with a bare status detail."""
    server.script(ScriptedReply(status=503, body=b""))
    assert SendResult(kind=SendKind.RETRY, status=503, detail="HTTP 503") == (
        transport.send_events(texts(1))
    )


def test_dropped_connection_is_retry(server: FakeTelemetryServer, transport: TelemetryApi) -> None:
    """A connection reset before any reply is RETRY, status None, naming the error class."""
    server.script(ScriptedReply(drop=True))
    result = transport.send_events(texts(1))
    assert (result.kind, result.status) == (SendKind.RETRY, None)
    assert result.detail.startswith("ConnectionError")


def test_read_timeout_is_retry(server: FakeTelemetryServer, transport: TelemetryApi) -> None:
    """A reply slower than the per-call timeout is RETRY with status None, naming the timeout."""
    server.script(ScriptedReply(delay=10.0))
    result = transport.send_events(texts(1), timeout=0.3)
    assert (result.kind, result.status) == (SendKind.RETRY, None)
    assert "Timeout" in result.detail


def test_hanging_server_is_bounded_by_the_constructor_timeout(
    server: FakeTelemetryServer,
) -> None:
    """A server that never answers (it holds the request until it stops) ends in RETRY: only the
    constructor's timeout can end the call."""
    quick = Transport(server.url, API_KEY, timeout=0.3)
    server.script(ScriptedReply(hang=True))
    result = quick.send_events(texts(1))
    assert (result.kind, result.status) == (SendKind.RETRY, None)
    assert "Timeout" in result.detail


def test_server_down_is_retry(server: FakeTelemetryServer, transport: TelemetryApi) -> None:
    """Nothing listening on the port is RETRY with status None, never an exception."""
    server.stop()
    result = transport.send_events(texts(1))
    assert (result.kind, result.status) == (SendKind.RETRY, None)
    assert result.detail.startswith("ConnectionError")


# --- what goes on the wire ----------------------------------------------------------------------
def test_headers_are_exactly_the_codec_headers(
    server: FakeTelemetryServer, transport: TelemetryApi
) -> None:
    """The request carries the codec's bearer, content type, schema version and user agent."""
    transport.send_events(texts(1))
    request = only_request(server)
    expected = wire.event_headers(API_KEY, get_version())
    assert expected == {name: request.headers[name] for name in expected}
    assert f"Bearer {API_KEY}" == request.headers["authorization"]
    assert wire.HEADER_CONTENT_ENCODING not in request.headers
    assert (request.path, request.method) == (wire.EVENTS_PATH, "POST")


def test_body_is_the_stored_texts_verbatim(
    server: FakeTelemetryServer, transport: TelemetryApi
) -> None:
    """The body bytes equal batch_body of the stored texts: joined, never re-encoded."""
    batch = texts(3)
    transport.send_events(batch)
    assert batch_body(batch) == only_request(server).body


def test_gzip_request_body(server: FakeTelemetryServer) -> None:
    """With gzip on, the body is gzip of batch_body and says so in Content-Encoding."""
    batch = texts(5)
    zipped = Transport(server.url, API_KEY, timeout=5.0, gzip=True)
    result = zipped.send_events(batch)
    request = only_request(server)
    assert SendKind.OK is result.kind
    expected = wire.event_headers(API_KEY, get_version(), gzip=True)
    assert expected == {name: request.headers[name] for name in expected}
    assert request.headers[wire.HEADER_CONTENT_ENCODING] == "gzip"
    assert batch_body(batch) == request.body  # the server decompressed it
    assert len(server.events) == 5


def test_per_call_timeout_wins(server: FakeTelemetryServer) -> None:
    """A timeout passed to send_events overrides the constructor's: with the constructor's 30 s,
    the reply delayed 10 s would be OK; with the call's 0.3 s it is a timeout, RETRY."""
    slow = Transport(server.url, API_KEY, timeout=30.0)
    server.script(ScriptedReply(delay=10.0))
    result = slow.send_events(texts(1), timeout=0.3)
    assert (result.kind, "Timeout" in result.detail) == (SendKind.RETRY, True)


def test_session_survives_close(server: FakeTelemetryServer, transport: TelemetryApi) -> None:
    """close() releases the connections; the next send opens a fresh session and works."""
    assert SendKind.OK is transport.send_events(texts(1)).kind
    transport.close()
    transport.close()  # idempotent
    assert SendKind.OK is transport.send_events(texts(1)).kind
    assert len(server.events) == 2


# --- predictions --------------------------------------------------------------------------------
QUERY = PredictionQuery(
    task_type="implementation", model="m1", provider="anthropic", complexity="medium"
)


def test_predictions_sent_without_authorization(
    server: FakeTelemetryServer, transport: TelemetryApi
) -> None:
    """Predictions go to PREDICTIONS_PATH with the codec's headers and no Authorization."""
    answer = {"prediction": None, "metadata": {"sample_size": 7}}
    server.set_prediction(QUERY, answer)
    results = transport.post_predictions([QUERY])
    request = only_request(server)
    assert [answer] == results
    assert request.path == wire.PREDICTIONS_PATH
    assert wire.HEADER_AUTHORIZATION not in request.headers
    expected = wire.prediction_headers(get_version())
    assert expected == {name: request.headers[name] for name in expected}
    assert predictions_body([QUERY]) == request.body
    assert [query_to_dict(QUERY)] == server.prediction_queries


def test_predictions_results_absent_is_empty(
    server: FakeTelemetryServer, transport: TelemetryApi
) -> None:
    """A 2xx predictions reply without ``results`` gives an empty list."""
    server.script_predictions(ScriptedReply(status=200, body={"other": 1}))
    assert transport.post_predictions([QUERY]) == []


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (ScriptedReply(status=500), "refused: HTTP 500"),
        (ScriptedReply(status=404), "refused: HTTP 404"),
        (ScriptedReply(status=200, body=b"not json"), "unreadable"),
    ],
)
def test_predictions_errors_raise_transport_error(
    server: FakeTelemetryServer, transport: TelemetryApi, reply: ScriptedReply, message: str
) -> None:
    """A non-2xx or unreadable predictions reply raises TransportError."""
    server.script_predictions(reply)
    with pytest.raises(TransportError, match=message):
        transport.post_predictions([QUERY])


def test_predictions_network_error_raises_from_requests(
    server: FakeTelemetryServer, transport: TelemetryApi
) -> None:
    """A dropped predictions request raises TransportError chained to the requests error."""
    import requests

    server.script_predictions(ScriptedReply(drop=True))
    with pytest.raises(TransportError, match="ConnectionError") as info:
        transport.post_predictions([QUERY], timeout=2.0)
    assert isinstance(info.value.__cause__, requests.RequestException)


# --- security -----------------------------------------------------------------------------------
def test_repr_hides_the_key(server: FakeTelemetryServer) -> None:
    """repr shows the server URL and never the key."""
    text = repr(Transport(server.url, API_KEY, timeout=5.0))
    assert server.url in text
    assert API_KEY not in text


def test_repr_hides_url_userinfo() -> None:
    """Credentials embedded in the server URL do not show in repr."""
    text = repr(Transport("https://user:s3cret@telemetry.example.com", API_KEY, timeout=5.0))
    assert "s3cret" not in text
    assert "https://telemetry.example.com" in text


def test_key_never_in_results_or_logs(
    server: FakeTelemetryServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Even a server echoing the key in its replies never gets it into details or log lines."""
    echo = {"detail": f"bad key {API_KEY}"}
    server.script(
        ScriptedReply(status=400, body=echo),
        ScriptedReply(status=503, body=echo),
        ScriptedReply(status=200, body=f"<{API_KEY}>"),
        ScriptedReply(drop=True),
    )
    sender = Transport(server.url, API_KEY, timeout=5.0)
    with caplog.at_level(logging.DEBUG):
        results = [sender.send_events(texts(1)) for _ in range(4)]
    assert [result.kind for result in results] == [
        SendKind.BAD_REQUEST,
        SendKind.RETRY,
        SendKind.OK,
        SendKind.RETRY,
    ]
    assert "[api key]" in results[0].detail
    for result in results:
        assert API_KEY not in repr(result)
    assert caplog.records
    for record in caplog.records:
        assert API_KEY not in record.getMessage()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9",
        "http://127.1.2.3:9",
        "http://localhost:9",
        "http://LOCALHOST",
        "http://[::1]:9",
        "https://telemetry.example.com",
    ],
)
def test_no_plain_http_warning_for_loopback_or_https(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Loopback http and any https construct without a warning."""
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        Transport(url, API_KEY, timeout=1.0)
    assert caplog.records == []


@pytest.mark.parametrize(
    "url", ["http://telemetry.example.com", "http://10.0.0.5:8080/", "http://[2001:db8::1]"]
)
def test_plain_http_to_remote_host_warns_once(url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Plain http to a non-loopback host logs exactly one warning at construction (no traffic)."""
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        Transport(url, API_KEY, timeout=1.0)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "plain http" in message
    assert API_KEY not in message


def test_import_does_not_load_requests() -> None:
    """Importing the transport (and so the package) loads neither requests nor urllib3."""
    code = (
        "import sys, mosaic_telemetry._delivery.transport, mosaic_telemetry._delivery.api\n"
        "print(sorted(m for m in ('requests', 'urllib3') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "[]"
