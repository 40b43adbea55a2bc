"""Scenario 10: a hostile network. Servers that trickle their reply one byte at a time, over
plain http and https, never hold an exchange past about ``request_timeout_seconds`` (issue 11):
the transport gives up at its deadline and closes the connection, ``stop()`` ends the worker
within its bound, and a live peer never resends the batch in flight. A 2xx that names ids we
never sent, or ours in upper case, costs a bounded number of requests and ``flush()`` returns.
"""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mosaic_telemetry import TelemetryClient, TelemetryConfig, TransportError, TransportRequest
from mosaic_telemetry._delivery.stats import WorkerSettings
from mosaic_telemetry._delivery.transport import RequestsTransport, body_grace
from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from ..helpers import API_KEY, INSTANCE_ID, make_events
from .conftest import wait_until

Config = Callable[..., TelemetryConfig]
#: The server sends one byte of its reply per this many seconds.
TRICKLE_SECONDS = 0.5
HEAD = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"


class TrickleServer:
    """A raw socket server on 127.0.0.1 that reads a request, then sends its reply slowly.

    ``mode="head"`` trickles the whole reply from the status line on; ``"body"`` sends the
    head at once and trickles a 200-byte body. Each connection is recorded: how many bytes
    went out, and whether the server saw the client close it (a send failed).
    """

    def __init__(self, *, mode: str = "head", tls: ssl.SSLContext | None = None) -> None:
        self._mode = mode
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.connections: list[dict[str, object]] = []
        self.closed = threading.Event()  # some connection was closed by the client
        self.connected = threading.Event()  # some request arrived
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        record: dict[str, object] = {"sent": 0, "closed_by_client": False, "request": b""}
        with self._lock:
            self.connections.append(record)
        try:
            if self._tls is not None:
                conn.settimeout(10)
                conn = self._tls.wrap_socket(conn, server_side=True)
            record["request"] = self._read_request(conn)
            self.connected.set()
            paced = HEAD + b"{}"
            if self._mode == "body":
                paced = b" " * 198 + b"{}"
                head = HEAD.replace(b"Content-Length: 2", f"Content-Length: {len(paced)}".encode())
                conn.sendall(head)
                record["sent"] = len(head)
            for byte in paced:
                if self._stop.wait(TRICKLE_SECONDS):
                    return
                conn.sendall(bytes([byte]))
                record["sent"] = int(str(record["sent"])) + 1
        except OSError:
            record["closed_by_client"] = True
            self.closed.set()
        finally:
            conn.close()

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (with the IP in subjectAltName) and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [*command, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def trickle(
    request: pytest.FixtureRequest, tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., TrickleServer]]:
    """Make trickling servers (``tls=True``: the client trusts the test certificate)."""
    made: list[TrickleServer] = []

    def make(*, mode: str = "head", tls: bool = False) -> TrickleServer:
        context = None
        if tls:
            cert, key = tls_files
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # verification stays on
        server = TrickleServer(mode=mode, tls=context)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def _post(url: str, timeout: float) -> TransportRequest:
    return TransportRequest(
        method="POST", url=url + "/v1/events/batch", content=b'{"events":[]}', timeout=timeout
    )


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_trickled_reply_head_ends_at_the_deadline(
    tls: bool, trickle: Callable[..., TrickleServer], report: Callable[..., None]
) -> None:
    """A status line sent one byte per 0.5 s raises TransportError at the 1 s deadline and the
    server sees the connection closed, over http and https."""
    server = trickle(tls=tls)
    transport = RequestsTransport()
    started = time.monotonic()
    with pytest.raises(TransportError):
        transport.handle_request(_post(server.url, timeout=1.0))
    seconds = time.monotonic() - started
    assert server.closed.wait(10), "the server never saw the connection closed"
    transport.close()
    (connection,) = server.connections
    sent = int(str(connection["sent"]))
    report(
        "hostile network",
        case=f"trickled head ({'https' if tls else 'http'})",
        timeout=1.0,
        seconds=round(seconds, 2),
        head_bytes_sent=sent,
        head_bytes=len(HEAD),
    )
    assert sent < len(HEAD) // 2  # a handful of bytes, nowhere near the whole head
    assert seconds < 1.0 + 2.0  # loose guard; the outcome above is the proof


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_trickled_body_gets_a_short_grace_then_the_exchange_ends(
    tls: bool, trickle: Callable[..., TrickleServer], report: Callable[..., None]
) -> None:
    """A head sent at once and a body trickled one byte per 0.5 s ends with the status and the
    bytes that came in time, and the connection closed."""
    server = trickle(mode="body", tls=tls)
    transport = RequestsTransport()
    started = time.monotonic()
    response = transport.handle_request(_post(server.url, timeout=1.0))
    seconds = time.monotonic() - started
    assert server.closed.wait(10)
    transport.close()
    report(
        "hostile network",
        case=f"trickled body ({'https' if tls else 'http'})",
        timeout=1.0,
        grace=body_grace(1.0),
        seconds=round(seconds, 2),
        body_bytes_read=len(response.content),
    )
    assert response.status_code == 202
    assert len(response.content) < 200  # cut at the deadline, not read to the end
    assert seconds < 1.0 + body_grace(1.0) + 2.0  # loose guard


def test_a_tls_server_that_never_answers_the_handshake_ends_at_the_deadline() -> None:
    """A TCP listener that never speaks TLS raises TransportError at the deadline."""
    listener = socket.create_server(("127.0.0.1", 0))  # never accepts: the kernel's backlog
    try:
        transport = RequestsTransport()
        url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(TransportError):
            transport.handle_request(_post(url, timeout=1.0))
        assert time.monotonic() - started < 1.0 + 2.0  # loose guard
    finally:
        listener.close()


def _worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mosaic-telemetry-worker")]


def test_stop_during_a_trickled_reply_ends_the_worker_within_its_bound(
    trickle: Callable[..., TrickleServer],
    outbox_path: Path,
    caplog: pytest.LogCaptureFixture,
    report: Callable[..., None],
) -> None:
    """stop() while the server trickles its reply returns with the worker thread gone and the
    events kept on disk."""
    server = trickle()
    client = TelemetryClient(
        TelemetryConfig(
            server_url=server.url,
            api_key=API_KEY,
            instance_id=INSTANCE_ID,
            outbox_path=outbox_path,
            request_timeout_seconds=10.0,
            shutdown_timeout_seconds=1.0,
            submit_interval_seconds=3600.0,
            max_retries=0,
        )
    )
    before = set(_worker_threads())
    client.start()
    for event in make_events(10):
        client.track(event)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        client.stop()  # the final drain's request gets at most the 1 s left
    seconds = time.monotonic() - started
    alive = [t for t in _worker_threads() if t not in before]
    report(
        "hostile network",
        case="stop() during a trickled reply",
        shutdown_timeout=1.0,
        stop_seconds=round(seconds, 2),
        worker_alive_after_stop=bool(alive),
        pending=client.queue_size,
    )
    assert server.connected.is_set()
    assert alive == []
    assert not [r for r in caplog.records if "still busy" in r.getMessage()]
    assert client.queue_size == 10
    assert seconds < 1.0 + body_grace(1.0) + 2.0  # loose guard


def test_a_peer_never_resends_a_batch_whose_reply_is_trickling(
    trickle: Callable[..., TrickleServer], outbox_path: Path, report: Callable[..., None]
) -> None:
    """While one client's request trickles, a peer on the same outbox sends nothing; the
    exchange ends at its deadline, well inside the lease, and the events stay pending."""
    server = trickle()
    timeout = 2.0
    settings = WorkerSettings(
        batch_size=100, submit_interval=3600.0, request_timeout=timeout, max_retries=0
    )
    # By construction: the lease outlives the longest exchange (head deadline + body grace).
    assert settings.lease_seconds > timeout + body_grace(timeout)

    def make() -> TelemetryClient:
        return TelemetryClient(
            TelemetryConfig(
                server_url=server.url,
                api_key=API_KEY,
                instance_id=INSTANCE_ID,
                outbox_path=outbox_path,
                request_timeout_seconds=timeout,
                submit_interval_seconds=3600.0,
                max_retries=0,
            )
        )

    sender, peer = make(), make()
    try:
        sender.start()
        peer.start()
        for event in make_events(10):
            sender.track(event)
        started = time.monotonic()
        flushing = threading.Thread(target=sender.flush, kwargs={"timeout": 30})
        flushing.start()
        assert server.connected.wait(10)
        peer.flush(timeout=10)  # the rows are leased by the sender: nothing to claim
        connections_while_in_flight = len(server.connections)
        flushing.join(30)
        seconds = time.monotonic() - started
        pending = sender.queue_size
        error = str(sender.stats()["last_error"])
    finally:
        sender.stop()
        peer.stop()
    report(
        "hostile network",
        case="peer during a trickled reply",
        timeout=timeout,
        lease_seconds=settings.lease_seconds,
        exchange_seconds=round(seconds, 2),
        connections_while_in_flight=connections_while_in_flight,
    )
    assert connections_while_in_flight == 1
    assert not flushing.is_alive()
    assert pending == 10
    assert "timed out" in error.lower() or "timeout" in error.lower(), error
    assert seconds < settings.lease_seconds  # loose guard: the outcome above is the proof


# --- a 2xx that lies about ids -----------------------------------------------------------------


def _verdicts(ids: list[str]) -> dict[str, object]:
    return {
        "accepted": len(ids),
        "rejected": 0,
        "results": [{"event_id": i, "status": "accepted", "error": None} for i in ids],
    }


@pytest.mark.parametrize("lie", ["ids never sent", "upper-cased ids"])
def test_a_2xx_that_names_other_ids_costs_a_bounded_number_of_requests(
    lie: str,
    server: FakeTelemetryServer,
    make_config: Config,
    clients: list[TelemetryClient],
    caplog: pytest.LogCaptureFixture,
    report: Callable[..., None],
) -> None:
    """Five events answered by a 2xx naming ids never sent (or ours upper-cased): flush()
    returns, the events go out in at most 2 more requests, and nothing is stored twice."""
    client = TelemetryClient(make_config(max_retries=0))
    clients.append(client)
    events = make_events(5)
    if lie == "ids never sent":
        body = _verdicts([str(uuid.uuid4()) for _ in events])
    else:
        body = _verdicts([str(e.event_id).upper() for e in events])
    # Ids never sent: the server kept nothing. Upper-cased ids: it stored the batch.
    server.script(ScriptedReply(status=202, body=body, store=lie == "upper-cased ids"))
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        client.start()
        for event in events:
            client.track(event)
        started = time.monotonic()
        result = client.flush(timeout=10)
        flush_seconds = time.monotonic() - started
        delivered = wait_until(lambda: client.stats()["delivered"] == 5, timeout=20)
        requests_seen = len(server.requests)
        # The next seconds would show a hot loop: nothing more may go out.
        assert not server.wait_for_requests(requests_seen + 1, timeout=1.5)
    report(
        "hostile network",
        case=f"2xx naming {lie}",
        events=5,
        requests=requests_seen,
        flush_seconds=round(flush_seconds, 2),
        delivered=client.stats()["delivered"],
        duplicates_stored=len(server.events) - len({e["event_id"] for e in server.events}),
    )
    assert not result.timed_out
    assert delivered
    assert requests_seen <= 3
    assert sorted(e["event_id"] for e in server.events) == sorted(str(e.event_id) for e in events)
    if lie == "ids never sent":
        unknown = [r for r in caplog.records if "not in the batch" in r.getMessage()]
        assert len(unknown) == 1
    else:
        assert requests_seen == 1  # upper-cased ids are our ids: compared as UUIDs
