"""``FakeTelemetryServer``: Telemetry API v1 on a real loopback socket, with scripted faults.

The HTTP layer (``http.LoopbackHTTPServer``) reads requests and carries out plans; the
``oracle`` judges them against wire-v1; this module holds the state a test reads (stored
events, received ids, recorded requests, prediction queries), the scripts a test writes, and
the lifecycle.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Literal

import attrs

from .. import PredictionQuery, PredictionResponse
from . import oracle, predictions
from .http import Incoming, LoopbackHTTPServer, Plan
from .replies import (
    PARSE_BODY,
    Faults,
    RecordedRequest,
    ScriptedReply,
    scripted_body,
    stores_events,
)

__all__ = ["READ_PATH", "FakeTelemetryServer"]

logger = logging.getLogger("mosaic_telemetry.testing")

#: ``GET`` here lists the stored events as JSON, with ``read_endpoint=True``. Not wire-v1.
READ_PATH = "/_fake/events"
_STOP_JOIN_SECONDS = 5.0


def _parse_json(body: bytes) -> tuple[bool, Any]:
    try:
        return True, json.loads(body)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return False, None


_NORMAL = ScriptedReply()  # the plan of a request answered normally: no delay, drop or hang


def _copy_valid(event: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of an event the oracle found valid, whose only containers are the two gate
    lists of strings: 30x faster than ``copy.deepcopy``, which took a third of the server's
    time (benchmarks/fake_server.py)."""
    copied = dict(event)
    copied["quality_gates_run"] = list(event["quality_gates_run"])
    copied["quality_gates_failed"] = list(event["quality_gates_failed"])
    return copied


def _encode(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


class FakeTelemetryServer:
    """A real HTTP server on 127.0.0.1 speaking Telemetry API v1, for tests.

    ``api_key=None`` accepts any ``Bearer <64 hex>``; with a key set the header must be exactly
    ``Bearer <api_key>``. A missing or malformed header is answered 401, another well-formed
    key 403. ``reject_invalid="per-event"`` answers 202 with per-event verdicts (storing the
    valid new events); ``"422"`` refuses a batch with any invalid event, FastAPI style.
    A stopped server can be started again: it listens on the same port, with its state kept.
    All methods are thread-safe.

    For requests no script answers, ``latency`` holds every reply that many seconds and a
    ``fail_rate`` share of events batches is answered 503 unstored (drawn from
    ``random.Random(seed)``; with ``Retry-After: retry_after`` when given).
    ``read_endpoint=True`` serves ``GET /_fake/events`` (the stored events as JSON; not part
    of the real API, not recorded), for tests in another process.
    ``on_request(record)`` is called from the handler thread with each recorded request.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        reject_invalid: Literal["per-event", "422"] = "per-event",
        max_body_bytes: int = 5_000_000,
        latency: float = 0.0,
        fail_rate: float = 0.0,
        seed: int | None = None,
        retry_after: int | None = None,
        read_endpoint: bool = False,
        on_request: Callable[[RecordedRequest], None] | None = None,
    ) -> None:
        if reject_invalid not in ("per-event", "422"):
            raise ValueError(f"reject_invalid must be 'per-event' or '422', got {reject_invalid!r}")
        self._host = host
        self._port = port
        self._refuse_invalid = reject_invalid == "422"
        self._max_body_bytes = max_body_bytes
        self._faults = Faults(latency, fail_rate, seed, retry_after)
        self._read_endpoint = read_endpoint
        self._on_request = on_request
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._life = threading.Lock()
        self._httpd: LoopbackHTTPServer | None = None
        self._api_key = api_key
        self._events: list[dict[str, Any]] = []
        self._stored_ids: set[str] = set()
        self._ids_received: list[str] = []
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[str, list[ScriptedReply]] = {
            oracle.EVENTS_PATH: [],
            oracle.PREDICTIONS_PATH: [],
        }
        self._predictions: dict[tuple[str, ...], Any] = {}
        self._queries: list[dict[str, Any]] = []

    # --- lifecycle ---
    def start(self) -> FakeTelemetryServer:
        """Start listening (a no-op when running); returns self."""
        with self._life:
            if self._httpd is not None:
                return self
            httpd = LoopbackHTTPServer((self._host, self._port), self._handle, self._max_body_bytes)
            self._port = int(httpd.server_address[1])  # a restart reuses the same port
            httpd.start(f"FakeTelemetryServer:{self._port}")
            self._httpd = httpd
        return self

    def stop(self) -> None:
        """Stop listening, release hanging and delayed handlers, close connections and join."""
        with self._life:
            httpd, self._httpd = self._httpd, None
            if httpd is not None:
                httpd.stop(_STOP_JOIN_SECONDS)

    def __enter__(self) -> FakeTelemetryServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (still valid after ``stop()``, for "server down" tests)."""
        if self._port == 0:
            raise RuntimeError("FakeTelemetryServer has not been started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def is_running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._httpd is not None

    def __repr__(self) -> str:
        state = self.url if self._port else "not started"
        with self._lock:
            counts = f"events={len(self._events)} requests={len(self._requests)}"
        return f"<FakeTelemetryServer {state} {counts}>"

    # --- configuration ---
    def script(self, *replies: ScriptedReply) -> None:
        """Script ``POST /v1/events/batch``: each request takes the next reply, then normal.

        The replies replace whatever was still queued, so ``script()`` alone clears the queue.
        """
        with self._lock:
            self._scripts[oracle.EVENTS_PATH] = list(replies)

    def script_predictions(self, *replies: ScriptedReply) -> None:
        """Script ``POST /v1/predictions/batch`` like ``script`` (queries are still recorded)."""
        with self._lock:
            self._scripts[oracle.PREDICTIONS_PATH] = list(replies)

    def set_api_key(self, api_key: str | None) -> None:
        """Change the accepted key (None: any well-formed key)."""
        with self._lock:
            self._api_key = api_key

    def set_prediction(
        self,
        query: PredictionQuery | Mapping[str, Any],
        response: Mapping[str, Any] | PredictionResponse,
    ) -> None:
        """Answer ``query`` (matched by its four values) with ``response`` (wire-v1 §2 dict)."""
        key = predictions.query_values(query)
        stored = predictions.to_wire(response)
        with self._lock:
            self._predictions[key] = stored

    def reset(self) -> None:
        """Forget events, requests, scripts, seeded predictions and recorded queries."""
        with self._lock:
            self._events.clear()
            self._stored_ids.clear()
            self._ids_received.clear()
            self._requests.clear()
            for queue in self._scripts.values():
                queue.clear()
            self._predictions.clear()
            self._queries.clear()

    # --- observations ---
    @property
    def events(self) -> list[dict[str, Any]]:
        """Stored events, once per ``event_id``, in arrival order (a deep copy)."""
        with self._lock:
            return [_copy_valid(event) for event in self._events]

    @property
    def event_ids_received(self) -> list[str]:
        """Every ``event_id`` of every events request (any reply), duplicates included."""
        with self._lock:
            return list(self._ids_received)

    @property
    def duplicates_received(self) -> int:
        """How many distinct ``event_id`` values arrived more than once."""
        with self._lock:
            counts = Counter(event_id.lower() for event_id in self._ids_received)
        return sum(1 for count in counts.values() if count > 1)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request to any path, in arrival order (a copy of the list)."""
        with self._lock:
            return list(self._requests)

    @property
    def prediction_queries(self) -> list[dict[str, Any]]:
        """Every prediction query of every well-formed predictions request, in order."""
        with self._lock:
            return copy.deepcopy(self._queries)

    def wait_for_events(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` events are stored; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._events) >= count, timeout)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` requests were received; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._requests) >= count, timeout)

    # --- request handling (called from handler threads) ---
    def _handle(self, incoming: Incoming) -> Plan:
        """Judge one request, record it, and say how to answer."""
        if self._read_endpoint and incoming.path == READ_PATH:
            if incoming.method != "GET":
                return Plan(405, b'{"detail": "Method Not Allowed"}', {"Allow": "GET"})
            return Plan(200, _encode(self.events), {})
        script: ScriptedReply | None = None
        ok_json, payload = _parse_json(incoming.body)
        if incoming.path not in self._scripts:
            normal = oracle.detail(404, "Not Found")
        elif incoming.method != "POST":
            normal = oracle.detail(405, "Method Not Allowed", Allow="POST")
        else:
            with self._lock:
                queue = self._scripts[incoming.path]
                script = queue.pop(0) if queue else self._faults.draw(incoming.path)
            if incoming.path == oracle.EVENTS_PATH:
                normal = self._events_reply(incoming, ok_json, payload, stores_events(script))
            else:
                normal = self._predictions_reply(incoming, ok_json, payload)
        if script is None:
            status, body, headers = normal.status, normal.body, dict(normal.headers)
            script = _NORMAL
        else:
            status, body = script.status, scripted_body(script, normal, incoming.path)
            headers = dict(script.headers)
        reply = _encode(body)
        record = RecordedRequest(
            method=incoming.method,
            path=incoming.path,
            headers=incoming.headers,
            body=incoming.body,
            json=PARSE_BODY,
            status=0 if script.drop or script.hang else status,
            at=incoming.at,
            reply=reply,
        )
        with self._changed:
            self._requests.append(record)
            index = len(self._requests) - 1
            self._changed.notify_all()
        if self._on_request is not None:
            try:
                self._on_request(record)
            except Exception:
                logger.exception("FakeTelemetryServer: the on_request callback failed")
        return Plan(
            status,
            reply,
            headers,
            delay=self._faults.latency + script.delay,
            drop=script.drop,
            hang=script.hang,
            cut_after=script.cut_after,
            on_unanswered=lambda: self._mark_unanswered(index),
        )

    def _mark_unanswered(self, index: int) -> None:
        with self._lock:
            if index < len(self._requests):
                self._requests[index] = attrs.evolve(self._requests[index], status=0)

    def _events_reply(
        self, incoming: Incoming, ok_json: bool, payload: Any, commit: bool
    ) -> oracle.Reply:
        if incoming.body_error is not None:
            return oracle.detail(incoming.body_error.status, incoming.body_error.detail)
        ids = oracle.received_ids(payload)
        with self._lock:
            self._ids_received.extend(ids)
            expected_key = self._api_key
        denied = oracle.check_authorization(incoming.headers.get("Authorization"), expected_key)
        if denied is not None:
            return denied
        events = oracle.batch_events(ok_json, payload)
        if isinstance(events, oracle.Reply):
            return events
        now = datetime.now(timezone.utc)
        problems = [oracle.event_problems(event, now) for event in events]
        with self._changed:
            judgement = oracle.judge(
                events, problems, self._stored_ids, refuse_invalid=self._refuse_invalid
            )
            if commit:
                for key, event in judgement.new:
                    self._stored_ids.add(key)
                    self._events.append(event)  # parsed for this request only: no copy needed
            self._changed.notify_all()
        return judgement.reply

    def _predictions_reply(self, incoming: Incoming, ok_json: bool, payload: Any) -> oracle.Reply:
        if incoming.body_error is not None:
            return oracle.detail(incoming.body_error.status, incoming.body_error.detail)
        queries = predictions.prediction_queries(ok_json, payload)
        if isinstance(queries, oracle.Reply):
            return queries
        with self._changed:
            self._queries.extend(copy.deepcopy(queries))
            results = [
                copy.deepcopy(
                    self._predictions.get(
                        tuple(q[k] for k in oracle.QUERY_KEYS), predictions.no_prediction()
                    )
                )
                for q in queries
            ]
            self._changed.notify_all()
        return oracle.Reply(200, {"results": results})
