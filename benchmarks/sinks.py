"""Loopback HTTP sinks, run as a child process by ``common.Sink``.

``python benchmarks/sinks.py fake`` serves ``FakeTelemetryServer`` (wire-v1, every event
validated and stored); ``python benchmarks/sinks.py peer`` answers 200 ``{}`` to every POST and
counts the events of PostHog and Segment (``{"batch": [...]}``) and of our own
(``{"events": [...]}``) bodies: a fast server, the same for every contender. (Our client reads
a 2xx reply without per-event results as "all accepted", as wire-v1 says.)
Both listen on 127.0.0.1 only. The first line printed is the URL; then each line read from
stdin is a command (``count``, ``reset``; for the peer sink also ``hold``: read each request
but reply to none until ``release``, so a sender's queue fills while its first batch waits)
answered with one line; end of stdin stops it.
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _PeerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the peers' requests sessions use it
    disable_nagle_algorithm = True  # see main()
    server: _PeerServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip" or body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        events = None
        if isinstance(payload, dict):
            events = payload.get("batch", payload.get("events"))
        self.server.gate.wait()  # open unless a hold is on
        with self.server.lock:
            self.server.received += len(events) if isinstance(events, list) else 0
        reply = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_PUT = do_POST


class _PeerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _PeerHandler)
        self.lock = threading.Lock()
        self.received = 0
        self.gate = threading.Event()
        self.gate.set()


def main(kind: str) -> None:
    if kind == "fake":
        from mosaic_telemetry.testing import FakeTelemetryServer

        fake = FakeTelemetryServer().start()  # replies with TCP_NODELAY, like real servers
        url = fake.url

        def count() -> int:
            return len(fake.event_ids_received)

        reset = fake.reset
        stop = fake.stop
        gate = None
    elif kind == "peer":
        server = _PeerServer()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"

        def count() -> int:
            with server.lock:
                return server.received

        def reset() -> None:
            with server.lock:
                server.received = 0

        def stop() -> None:
            server.gate.set()
            server.shutdown()
            server.server_close()

        gate = server.gate

    else:
        raise SystemExit(f"unknown sink kind {kind!r}")
    print(url, flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "count":
            print(count(), flush=True)
        elif command == "reset":
            reset()
            print("ok", flush=True)
        elif command == "hold" and gate is not None:
            gate.clear()
            print("ok", flush=True)
        elif command == "release" and gate is not None:
            gate.set()
            print("ok", flush=True)
    stop()


if __name__ == "__main__":
    main(sys.argv[1])
