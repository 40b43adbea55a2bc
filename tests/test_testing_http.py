"""Tests of mosaic_telemetry.testing.http: the loopback HTTP server and its plans, over sockets."""

from __future__ import annotations

import gzip
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests

from mosaic_telemetry.testing.http import Incoming, LoopbackHTTPServer, Plan

from .fake_wire import handler_threads, in_thread

OK = Plan(200, b'{"ok": true}', {})


class Recorder:
    """An application that records each request and answers with ``plan(incoming)``."""

    def __init__(self, plan: Callable[[Incoming], Plan] = lambda _: OK) -> None:
        self.plan = plan
        self.seen: list[Incoming] = []
        self.arrived = threading.Event()

    def __call__(self, incoming: Incoming) -> Plan:
        self.seen.append(incoming)
        self.arrived.set()
        return self.plan(incoming)


@contextmanager
def serving(
    app: Recorder, max_body_bytes: int = 10_000
) -> Iterator[tuple[LoopbackHTTPServer, str]]:
    """A started LoopbackHTTPServer for ``app`` and its URL; stopped afterwards."""
    httpd = LoopbackHTTPServer(("127.0.0.1", 0), app, max_body_bytes)
    httpd.start("test-http")
    try:
        yield httpd, f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.stop(10.0)


@pytest.fixture
def app() -> Recorder:
    """A recorder answering 200 to everything."""
    return Recorder()


@pytest.fixture
def served(app: Recorder) -> Iterator[tuple[LoopbackHTTPServer, str]]:
    """The recorder, served."""
    with serving(app) as pair:
        yield pair


def raw_exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    """Send ``data`` on a fresh connection; what came back until the end, and if it was a reset."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(data)
        try:
            while chunk := raw.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            return b"".join(chunks), True
    return b"".join(chunks), False


# --- reading requests -----------------------------------------------------------------------------
def test_plain_request_is_read_with_case_insensitive_headers(
    app: Recorder, served: tuple[LoopbackHTTPServer, str]
) -> None:
    """Method, path without query, body and headers reach the application as sent."""
    _, url = served
    before = time.monotonic()

    reply = requests.post(url + "/a/b?x=1", data=b"hello", headers={"X-Test": "yes"}, timeout=5)

    assert (reply.status_code, reply.json()) == (200, {"ok": True})
    (seen,) = app.seen
    assert (seen.method, seen.path, seen.body, seen.body_error) == ("POST", "/a/b", b"hello", None)
    assert seen.headers["x-test"] == "yes"
    assert before <= seen.at <= time.monotonic()


def test_gzip_body_is_decompressed(app: Recorder, served: tuple[LoopbackHTTPServer, str]) -> None:
    """A gzip Content-Encoding body reaches the application decompressed."""
    _, url = served

    requests.post(
        url, data=gzip.compress(b"plain"), headers={"Content-Encoding": "gzip"}, timeout=5
    )

    assert app.seen[0].body == b"plain"


def test_chunked_body_is_reassembled(app: Recorder, served: tuple[LoopbackHTTPServer, str]) -> None:
    """A chunked request body (no Content-Length) is reassembled."""
    _, url = served

    requests.post(url, data=iter([b"one,", b"two"]), timeout=5)

    assert app.seen[0].body == b"one,two"


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"x" * 10_001, {}, 413),
        (gzip.compress(b"x" * 10_001), {"Content-Encoding": "gzip"}, 413),
        (b"plainly not gzip", {"Content-Encoding": "gzip"}, 400),
        (gzip.compress(b"x" * 100)[:-12], {"Content-Encoding": "gzip"}, 400),
        (b"data", {"Content-Encoding": "br"}, 415),
    ],
    ids=["too-long", "gzip-bomb", "not-gzip", "truncated-gzip", "unknown-encoding"],
)
def test_unreadable_body_is_a_body_error_and_the_connection_stays_usable(
    app: Recorder,
    served: tuple[LoopbackHTTPServer, str],
    body: bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    """A body too large (raw or inflated) or badly encoded reaches the app as an error status."""
    _, url = served
    with requests.Session() as session:
        session.post(url, data=body, headers=headers, timeout=5)
        session.post(url, data=b"next", timeout=5)

    first, second = app.seen
    assert first.body == b""
    assert first.body_error is not None and first.body_error.status == status
    assert not first.body_error.close
    assert (second.body, second.body_error) == (b"next", None)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"Content-Length: -1\r\n", 400),
        (b"Content-Length: many\r\n", 400),
        (b"Transfer-Encoding: gzip\r\n", 400),
        (b"Transfer-Encoding: chunked\r\n", 400),  # followed by a malformed chunk size
    ],
    ids=["negative-length", "bad-length", "bad-transfer", "bad-chunk"],
)
def test_unframeable_body_closes_the_connection(
    app: Recorder, served: tuple[LoopbackHTTPServer, str], head: bytes, status: int
) -> None:
    """A body whose end cannot be found is an error that also closes the connection."""
    httpd, _ = served

    answer, _ = raw_exchange(httpd.server_port, b"POST / HTTP/1.1\r\n" + head + b"\r\nzz\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 200")
    assert b"Connection: close" in answer
    error = app.seen[0].body_error
    assert error is not None and (error.status, error.close) == (status, True)


def test_garbage_and_abrupt_disconnects_do_not_kill_the_server(
    app: Recorder, served: tuple[LoopbackHTTPServer, str]
) -> None:
    """A non-HTTP client and a client that leaves mid-body leave the server serving."""
    httpd, url = served
    answer, _ = raw_exchange(httpd.server_port, b"\x00\x01garbage\r\n\r\n")
    assert b"400" in answer
    with socket.create_connection(("127.0.0.1", httpd.server_port), timeout=5) as raw:
        raw.sendall(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")

    assert requests.post(url, data=b"still here", timeout=5).status_code == 200


def test_application_error_is_a_500_and_logged(
    served: tuple[LoopbackHTTPServer, str], app: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """An application that raises is answered 500 with a detail and logged; serving goes on."""
    _, url = served

    def broken(incoming: Incoming) -> Plan:
        if incoming.path == "/boom":
            raise RuntimeError("bug in the app")
        return OK

    app.plan = broken
    with caplog.at_level(logging.ERROR, logger="mosaic_telemetry.testing"):
        reply = requests.post(url + "/boom", timeout=5)

    assert (reply.status_code, reply.json()) == (500, {"detail": "fake server error"})
    assert any("bug in the app" in r.exc_text for r in caplog.records if r.exc_text)
    assert requests.post(url, timeout=5).status_code == 200


# --- carrying out plans ---------------------------------------------------------------------------
def test_headers_close_and_bodiless_statuses(
    app: Recorder, served: tuple[LoopbackHTTPServer, str]
) -> None:
    """Plan headers are sent (Content-Length is ours); close asks to close; 204 has no body."""
    _, url = served
    app.plan = lambda i: Plan(
        204 if i.path == "/none" else 201,
        b"{}",
        {"X-A": "1", "Content-Length": "999"},
        close=i.path == "/close",
    )

    plain = requests.post(url, timeout=5)
    closing = requests.post(url + "/close", timeout=5)
    empty = requests.post(url + "/none", timeout=5)
    head = requests.head(url, timeout=5)

    assert (plain.status_code, plain.headers["X-A"], plain.headers["Content-Length"]) == (
        201,
        "1",
        "2",
    )
    assert plain.headers["Content-Type"] == "application/json"
    assert closing.headers["Connection"] == "close"
    assert (empty.status_code, empty.content, "Content-Length" in empty.headers) == (
        204,
        b"",
        False,
    )
    assert (head.status_code, head.content) == (201, b"")


def test_drop_resets_the_connection(app: Recorder, served: tuple[LoopbackHTTPServer, str]) -> None:
    """drop: the request was read, then the connection is reset without a reply."""
    httpd, _ = served
    app.plan = lambda _: Plan(200, b"{}", {}, drop=True)

    answer, reset = raw_exchange(
        httpd.server_port, b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
    )

    assert (answer, reset) == (b"", True)
    assert len(app.seen) == 1


def test_cut_after_sends_exactly_that_many_bytes_then_resets(
    app: Recorder, served: tuple[LoopbackHTTPServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    """cut_after=N: the first N bytes of the reply arrive, then a reset, never the rest; the
    handler ends cleanly (no error logged for the connection)."""
    httpd, _ = served
    app.plan = lambda _: Plan(200, b'{"ok": true}', {}, cut_after=17)

    with caplog.at_level(logging.DEBUG, logger="mosaic_telemetry.testing"):
        answer, reset = raw_exchange(
            httpd.server_port, b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
        )
        assert httpd.stop(10.0)

    assert (answer, reset) == (b"HTTP/1.1 200 OK\r\n", True)
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


def test_delay_holds_the_reply_at_least_that_long(
    app: Recorder, served: tuple[LoopbackHTTPServer, str]
) -> None:
    """delay: the reply leaves no sooner than ``delay`` after the request was read."""
    _, url = served
    app.plan = lambda _: Plan(200, b"{}", {}, delay=0.3)

    reply = requests.post(url, timeout=30)
    replied = time.monotonic()

    assert reply.status_code == 200
    assert replied - app.seen[0].at >= 0.3  # a floor: a busy machine only adds to it


@pytest.mark.parametrize("hold", ["hang", "delay"])
def test_stop_releases_a_held_reply_with_a_reset(app: Recorder, hold: str) -> None:
    """stop() ends a hanging or long-delayed request at once: the client sees a reset, not its
    timeout; a cut delay reports on_unanswered; every handler thread is joined."""
    unanswered = threading.Event()
    app.plan = lambda _: Plan(
        200,
        b"{}",
        {},
        hang=hold == "hang",
        delay=3600.0 if hold == "delay" else 0.0,
        on_unanswered=unanswered.set,
    )
    with serving(app) as (httpd, url):
        client, errors = in_thread(lambda: requests.post(url, timeout=20))
        assert app.arrived.wait(10)

        assert httpd.stop(10.0) is True

    client.join(60)
    assert len(errors) == 1
    assert isinstance(errors[0], requests.ConnectionError)
    assert not isinstance(errors[0], requests.Timeout)
    assert unanswered.is_set() is (hold == "delay")
    assert handler_threads(httpd.server_port) == []


def test_stop_closes_idle_keep_alive_connections(
    app: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """An idle keep-alive connection does not hold stop(): its handler is woken and joined."""
    with serving(app) as (httpd, url), requests.Session() as session:
        for _ in range(3):
            assert session.post(url, timeout=5).status_code == 200
        assert len(handler_threads(httpd.server_port)) == 1  # one connection, kept alive

        with caplog.at_level(logging.WARNING, logger="mosaic_telemetry.testing"):
            assert httpd.stop(10.0) is True

    assert handler_threads(httpd.server_port) == []
    assert [r for r in caplog.records if r.name.startswith("mosaic_telemetry")] == []


def test_request_lines_go_to_the_debug_logger(
    served: tuple[LoopbackHTTPServer, str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Request logging goes to the "mosaic_telemetry.testing" logger at DEBUG, never to stderr."""
    httpd, url = served
    with caplog.at_level(logging.DEBUG, logger="mosaic_telemetry.testing"):
        requests.post(url + "/logged", timeout=5)
        httpd.stop(10.0)  # joins the handler, so its log line has been emitted

    assert any("/logged" in r.getMessage() for r in caplog.records)
    assert all(r.name == "mosaic_telemetry.testing" for r in caplog.records)
    assert capfd.readouterr().err == ""
