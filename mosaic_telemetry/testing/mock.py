"""``MockTransport``: the SDK's transport seam as a plain function, for tests without sockets.

Like ``httpx.MockTransport``, it is built from a handler, a function from the request the SDK
wants sent to the reply it gets. A handler that raises :class:`~mosaic_telemetry.TransportError`
means "no reply" (connection refused, timeout, reset); any other exception is a bug in the
handler and propagates. Every request is recorded before the handler runs::

    from mosaic_telemetry import TelemetryClient, TelemetryConfig, TransportError
    from mosaic_telemetry.testing import MockTransport, TransportRequest, TransportResponse

    def flaky(request: TransportRequest) -> TransportResponse:
        if len(transport.requests) == 1:
            raise TransportError("connection reset")           # the first send gets no reply
        events = request.json()["events"]
        return TransportResponse.from_json(202, {"accepted": len(events), "rejected": 0})

    transport = MockTransport(flaky)
    client = TelemetryClient(config, transport=transport)

``MockTransport.accepting()`` answers like ``FakeTelemetryServer`` with its defaults: events
judged against wire-v1 §3 with per-event verdicts (duplicates by ``event_id``), "no data"
predictions, 401 for a missing or malformed key. Thread-safe.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .._delivery.seam import TransportRequest, TransportResponse
from . import oracle, predictions

__all__ = ["Handler", "MockTransport"]

#: What a ``MockTransport`` is built from.
Handler = Callable[[TransportRequest], TransportResponse]


class MockTransport:
    """A transport whose replies come from ``handler(request)``; records every request."""

    def __init__(self, handler: Handler) -> None:
        if not callable(handler):
            raise TypeError(
                f"MockTransport: handler must be callable, got {type(handler).__name__}"
            )
        self._handler = handler
        self._changed = threading.Condition(threading.Lock())
        self._requests: list[TransportRequest] = []
        self._closed = False

    @classmethod
    def accepting(cls, api_key: str | None = None) -> MockTransport:
        """A transport answering like ``FakeTelemetryServer(api_key)`` does, without a socket."""
        return cls(_Acceptor(api_key))

    def handle_request(self, request: TransportRequest) -> TransportResponse:
        """Record ``request`` and return the handler's reply (its TransportError propagates)."""
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()
        response = self._handler(request)
        if not isinstance(response, TransportResponse):
            raise TypeError(
                "MockTransport: the handler must return a TransportResponse, "
                f"got {type(response).__name__}"
            )
        return response

    def close(self) -> None:
        """Mark the transport closed (requests still work: a restarted client may reuse it)."""
        with self._changed:
            self._closed = True

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        with self._changed:
            return self._closed

    @property
    def requests(self) -> list[TransportRequest]:
        """Every request seen, in order (a copy of the list)."""
        with self._changed:
            return list(self._requests)

    @property
    def sent_events(self) -> list[Any]:
        """Every event of every events-batch request seen, in order, resends included."""
        found: list[Any] = []
        for request in self.requests:
            if urlsplit(request.url).path.endswith(oracle.EVENTS_PATH):
                ok, payload = _json(request)
                events = payload.get("events") if ok and isinstance(payload, dict) else None
                found += events if isinstance(events, list) else []
        return found

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` requests were seen; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._requests) >= count, timeout)

    def __repr__(self) -> str:
        with self._changed:
            return f"<MockTransport requests={len(self._requests)} closed={self._closed}>"


def _json(request: TransportRequest) -> tuple[bool, Any]:
    try:
        return True, request.json()
    except (ValueError, OSError, EOFError, zlib.error):  # bad JSON, bad or truncated gzip
        return False, None


class _Acceptor:
    """The handler of ``MockTransport.accepting()``: the fake server's judgement, no socket."""

    def __init__(self, api_key: str | None) -> None:
        self._api_key = api_key
        self._lock = threading.Lock()
        self._stored: set[str] = set()

    def __call__(self, request: TransportRequest) -> TransportResponse:
        reply = self._reply(request)
        return TransportResponse.from_json(reply.status, reply.body, headers=reply.headers)

    def _reply(self, request: TransportRequest) -> oracle.Reply:
        path = urlsplit(request.url).path
        is_events = path.endswith(oracle.EVENTS_PATH)
        if not (is_events or path.endswith(oracle.PREDICTIONS_PATH)):
            return oracle.detail(404, "Not Found")
        if request.method != "POST":
            return oracle.detail(405, "Method Not Allowed", Allow="POST")
        ok, payload = _json(request)
        if not is_events:
            queries = predictions.prediction_queries(ok, payload)
            if isinstance(queries, oracle.Reply):
                return queries
            return oracle.Reply(200, {"results": [predictions.no_prediction() for _ in queries]})
        denied = oracle.check_authorization(request.headers.get("Authorization"), self._api_key)
        if denied is not None:
            return denied
        events = oracle.batch_events(ok, payload)
        if isinstance(events, oracle.Reply):
            return events
        problems = [oracle.event_problems(event) for event in events]
        with self._lock:
            judgement = oracle.judge(events, problems, self._stored)
            self._stored.update(key for key, _ in judgement.new)
        return judgement.reply
