"""HTTP plumbing of the fake server: a threading HTTP/1.1 server that can misbehave on cue.

``LoopbackHTTPServer`` reads each request (Content-Length or chunked, gzip, size limits) into
an :class:`Incoming`, asks its application what to do (a :class:`Plan`) and carries the plan
out: answer, answer late, reset the connection, hang until stopped, or cut the reply after N
bytes. It knows HTTP and nothing of telemetry; ``server.FakeTelemetryServer`` is the
application. Handler threads and open connections are tracked so ``stop`` is bounded even with
idle keep-alive clients and hanging requests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

import attrs

from .._delivery.seam import Headers
from .bodies import BodyError, read_body

__all__ = ["Application", "Incoming", "LoopbackHTTPServer", "Plan"]

logger = logging.getLogger("mosaic_telemetry.testing")

_CONTENT_TYPE_JSON = "application/json"


@attrs.frozen
class Incoming:
    """One request as read: ``body`` is decompressed, or ``b""`` with ``body_error`` set."""

    method: str
    path: str
    headers: Headers
    body: bytes
    body_error: BodyError | None
    at: float


@attrs.frozen
class Plan:
    """What to send back. ``drop``: reset without a reply; ``hang``: hold until stop;
    ``delay``: wait first (cut short by stop, then ``on_unanswered`` runs); ``cut_after``:
    send that many bytes of the reply, then reset."""

    status: int
    payload: bytes
    headers: Mapping[str, str]
    delay: float = 0.0
    drop: bool = False
    hang: bool = False
    close: bool = False
    cut_after: int | None = None
    on_unanswered: Callable[[], None] | None = None


#: What the HTTP layer serves: one request in, one plan out (called from handler threads).
Application = Callable[[Incoming], Plan]


class _CutWriter:
    """Writes through until ``limit`` bytes have gone out, then swallows the rest."""

    def __init__(self, target: Any, limit: int) -> None:
        self._target, self._left = target, limit

    def write(self, data: bytes) -> int:
        part = bytes(data[: self._left])
        self._left -= len(part)
        if part:
            self._target.write(part)
        return len(data)

    def flush(self) -> None:
        self._target.flush()

    # socketserver's finish() flushes and closes wfile; without these it raised AttributeError
    # after every cut reply (logged at DEBUG) and left the real writer to the GC.
    @property
    def closed(self) -> bool:
        return bool(self._target.closed)

    def close(self) -> None:
        self._target.close()


class LoopbackHTTPServer(ThreadingHTTPServer):
    """One run of the fake: listening socket, handler threads, open connections, stop flag."""

    daemon_threads = True
    # Handler threads are tracked and joined with a deadline by ``stop`` instead of the
    # unbounded join of ``ThreadingMixIn.server_close``.
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: Application, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.stopping = threading.Event()
        self._track = threading.Lock()
        self._handler_threads: set[threading.Thread] = set()
        self._connections: set[socket.socket] = set()
        self._aborted: set[socket.socket] = set()
        self._serving: threading.Thread | None = None
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def start(self, name: str) -> threading.Thread:
        """Serve in a new daemon thread called ``name``; returns the thread."""
        thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.02}, name=name, daemon=True
        )
        thread.start()
        self._serving = thread
        return thread

    def stop(self, timeout: float) -> bool:
        """Stop: release hanging and delayed plans, close every connection, join the threads.

        Waits at most about ``timeout`` seconds for each of the serving thread and the handlers;
        False (with a warning) when a handler is still running after that.
        """
        self.stopping.set()
        if self._serving is not None:
            self.shutdown()
        self.close_connections()
        self.server_close()
        if self._serving is not None:
            self._serving.join(timeout)
        return self.join_handlers(timeout)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(host), a reverse DNS lookup that can
        # take seconds on hosts with a broken resolver; the fake never needs the name.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"FakeTelemetryServer-handler:{self.server_port}",
            daemon=True,
        )
        with self._track:
            self._handler_threads.add(thread)
            self._connections.add(request)
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._track:
                self._handler_threads.discard(threading.current_thread())
                self._connections.discard(request)
                self._aborted.discard(request)

    def abort(self, connection: socket.socket) -> None:
        """Make the close of ``connection`` a reset (RST), not an orderly FIN."""
        with contextlib.suppress(OSError):
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with self._track:
            self._aborted.add(connection)

    def shutdown_request(self, request: Any) -> None:
        with self._track:
            aborted = request in self._aborted
        if aborted:
            self.close_request(request)  # no shutdown(SHUT_WR): that would send a FIN first
        else:
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s failed", client_address, exc_info=True)

    def close_connections(self) -> None:
        """Wake every handler blocked reading a keep-alive connection."""
        with self._track:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handler_threads(self) -> list[threading.Thread]:
        """The handler threads still running."""
        with self._track:
            return list(self._handler_threads)

    def join_handlers(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every handler; False (and a warning) if one lingers."""
        deadline = time.monotonic() + timeout
        for thread in self.handler_threads():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning(
                    "a FakeTelemetryServer handler did not finish within %.1f s", timeout
                )
                return False
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests.Session and the SDK use it
    # http.server sends the headers and the body of a reply in two writes; without TCP_NODELAY
    # the body waits for the client's delayed ACK, ~40 ms a request on Linux loopback. (One
    # buffered write instead measured 15-30 % slower in benchmarks/fake_server.py.)
    disable_nagle_algorithm = True
    server_version = "FakeTelemetryServer/1"
    sys_version = ""
    timeout = 30  # an idle keep-alive connection is closed after this many seconds

    @property
    def _server(self) -> LoopbackHTTPServer:
        return cast(LoopbackHTTPServer, self.server)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_POST(self) -> None:
        self._serve()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_POST

    def _serve(self) -> None:
        answered = False
        try:
            incoming = self._read_request()
            plan = self._server.app(incoming)
            if incoming.body_error is not None and incoming.body_error.close:
                plan = attrs.evolve(plan, close=True)  # the next request cannot be found
            answered = self._execute(plan)
        except OSError:
            logger.debug("client connection failed", exc_info=True)
            self.close_connection = True
        except Exception:
            # Never let a bug here kill the server: log it and answer 500 if nothing was sent.
            logger.exception("FakeTelemetryServer failed to handle %s %s", self.command, self.path)
            if not answered:
                body = json.dumps({"detail": "fake server error"}).encode()
                try:
                    self._send(500, body, {}, close=True)
                except OSError:
                    self.close_connection = True

    def _read_request(self) -> Incoming:
        at = time.monotonic()
        headers = Headers(dict(self.headers.items()))
        try:
            body, error = read_body(self.rfile, self.headers, self._server.max_body_bytes), None
        except BodyError as exc:
            body, error = b"", exc
        return Incoming(self.command, urlsplit(self.path).path, headers, body, error, at)

    def _execute(self, plan: Plan) -> bool:
        """Carry out ``plan``; True once a reply was sent."""
        stopping = self._server.stopping
        if plan.hang:
            stopping.wait()
            self._abort()
            return False
        if plan.delay > 0 and stopping.wait(plan.delay):
            if plan.on_unanswered is not None:
                plan.on_unanswered()
            self._abort()
            return False
        if plan.drop:
            self._abort()
            return False
        if plan.cut_after is not None:
            self.wfile = cast(Any, _CutWriter(self.wfile, plan.cut_after))
            self._send(plan.status, plan.payload, plan.headers, close=True)
            self.wfile.flush()
            self._abort()
            return False
        self._send(plan.status, plan.payload, plan.headers, close=plan.close)
        return True

    def _abort(self) -> None:
        self.close_connection = True
        self._server.abort(self.connection)

    def _send(
        self, status: int, payload: bytes, headers: Mapping[str, str], *, close: bool
    ) -> None:
        self.send_response(status)
        names = {name.lower() for name in headers}
        if "content-type" not in names:
            self.send_header("Content-Type", _CONTENT_TYPE_JSON)
        for name, value in headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        has_body = status not in (204, 304)
        if has_body:
            self.send_header("Content-Length", str(len(payload)))
        if close:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if has_body and self.command != "HEAD":
            self.wfile.write(payload)
