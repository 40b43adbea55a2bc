"""A fake Mosaic Telemetry API v1 server for tests: real HTTP on 127.0.0.1, scripted faults.

``FakeTelemetryServer`` speaks ``wire-v1.md`` over real sockets, so the whole SDK (outbox,
worker, retries, gzip, keep-alive) is exercised exactly as in production. It validates every
event against the schema table of wire-v1 §3 on its own (it shares no validation code with
the SDK, so it catches SDK bugs), stores valid events once per ``event_id`` and records every
request. Faults are scripted per request::

    from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

    def test_survives_rate_limit() -> None:
        with FakeTelemetryServer() as server:
            server.script(ScriptedReply(status=429, headers={"Retry-After": "1"}),
                          ScriptedReply(drop=True))          # then normal replies
            config = TelemetryConfig(server_url=server.url, api_key="ab" * 32, ...)
            ...                                             # track events, flush
            assert server.wait_for_events(3)
            assert server.duplicates_received == 0

With pytest, enable the plugin once (``pytest_plugins = ["mosaic_telemetry.testing"]`` in
your root ``conftest.py``) and ask for the ``fake_telemetry_server`` fixture: a started server,
stopped after the test.

Only the standard library and this package are imported; pytest is optional.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import re
import socket
import socketserver
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from enum import Enum
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import attrs

from ._builder import EventBuilder
from ._enums import Complexity, Harness, Outcome, Provider, QualityGate, TaskType
from ._models import PredictionQuery, PredictionResponse
from ._wire.http import (
    EVENTS_PATH,
    HEADER_AUTHORIZATION,
    HEADER_CONTENT_ENCODING,
    HEADER_CONTENT_TYPE,
    KEY_DETAIL,
    KEY_ERROR,
    KEY_EVENT_ID,
    KEY_EVENTS,
    KEY_LOC,
    KEY_MSG,
    KEY_QUERIES,
    KEY_RESULTS,
    KEY_STATUS,
    MAX_BATCH_EVENTS,
    MAX_PREDICTION_QUERIES,
    PREDICTIONS_PATH,
    QUERY_KEYS,
    STATUS_ACCEPTED,
    STATUS_DUPLICATE,
    STATUS_REJECTED,
)
from ._wire.predictions import query_to_dict

__all__ = ["FakeTelemetryServer", "RecordedRequest", "ScriptedReply", "example_event_builder"]

logger = logging.getLogger("mosaic_telemetry.testing")


def example_event_builder(instance_id: str) -> EventBuilder:
    """An EventBuilder with every field of the upstream README's example event set.

    Call ``.build()`` for a valid event (a fresh ``event_id`` each time), or override any
    setter first.
    """
    return (
        EventBuilder(instance_id=instance_id)
        .task_type(TaskType.IMPLEMENTATION)
        .model("claude-sonnet-4-5-20250929")
        .provider(Provider.ANTHROPIC)
        .harness_type(Harness.CLAUDE_CODE)
        .complexity_level(Complexity.MEDIUM)
        .outcome_value(Outcome.SUCCESS)
        .duration_ms(45000)
        .tokens(estimated_in=105000, estimated_out=45000, actual_in=112340, actual_out=38760)
        .cost(estimated=630000, actual=919200)
        .quality(passed=True, gates_run=[QualityGate.BUILD, QualityGate.LINT, QualityGate.TEST])
        .context(compactions=2, rotations=0, utilization=0.72)
        .language("typescript")
    )


_CONTENT_TYPE_JSON = "application/json"
#: A body above ``max_body_bytes`` but below this is read and discarded so the client gets
#: the 413 instead of a reset while it is still sending; a larger one closes the connection.
_DRAIN_LIMIT = 64 << 20
_STOP_JOIN_SECONDS = 5.0
_NO_PREDICTION: dict[str, Any] = {
    "prediction": None,
    "metadata": {
        "sample_size": 0,
        "fallback_level": 0,
        "confidence": "none",
        "last_updated": None,
        "dimensions_matched": None,
        "fallback_note": "no data",
        "cache_hit": False,
    },
}

# --- schema 1.0, written out from wire-v1 §3/§4 (independent of the SDK's own models) ---------
_TASK_TYPES = frozenset(
    [
        "planning",
        "implementation",
        "code_review",
        "testing",
        "debugging",
        "refactoring",
        "documentation",
        "configuration",
        "security_audit",
        "unknown",
    ]
)
_COMPLEXITIES = frozenset(["low", "medium", "high", "critical"])
_HARNESSES = frozenset(
    [
        "claude_code",
        "opencode",
        "kilo_code",
        "aider",
        "api_direct",
        "ollama_local",
        "custom",
        "unknown",
    ]
)
_PROVIDERS = frozenset(
    ["anthropic", "openai", "openrouter", "ollama", "google", "mistral", "custom", "unknown"]
)
_QUALITY_GATES = frozenset(["build", "lint", "test", "coverage", "typecheck", "security"])
_OUTCOMES = frozenset(["success", "failure", "partial", "timeout"])
_REPO_SIZES = frozenset(["tiny", "small", "medium", "large", "huge"])

_UUID_RE = re.compile(r"\A[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
_TIMESTAMP_RE = re.compile(
    r"\A(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})\Z"
)
_BEARER_RE = re.compile(r"\ABearer [0-9a-fA-F]{64}\Z")
_MAX_FUTURE = timedelta(hours=1)

_Rule = Callable[[Any], "str | None"]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _int_rule(low: int, high: int) -> _Rule:
    def check(value: Any) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"must be an integer in {low}..{high}, got {_json_type(value)}"
        if not low <= value <= high:
            return f"must be in {low}..{high}, got {value}"
        return None

    return check


def _enum_rule(values: frozenset[str], *, nullable: bool = False) -> _Rule:
    allowed = ", ".join(sorted(values))

    def check(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str) or value not in values:
            return f"must be one of {allowed}{' or null' if nullable else ''}, got {value!r:.60}"
        return None

    return check


def _check_uuid(value: Any) -> str | None:
    if not isinstance(value, str) or not _UUID_RE.match(value):
        return f"must be a UUID string, got {value!r:.60}"
    return None


def _parse_timestamp(text: str) -> datetime:
    """ISO-8601 with a time zone (``Z`` or ``±HH:MM``); raises ValueError."""
    match = _TIMESTAMP_RE.match(text)
    if not match:
        raise ValueError("must be ISO-8601 with a time zone, e.g. 2024-01-01T12:00:00.000000Z")
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, zone = match.group(7) or "0", match.group(8)
    if zone == "Z":
        tz = timezone.utc
    else:
        sign = -1 if zone[0] == "-" else 1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        if offset >= timedelta(hours=24):
            raise ValueError(f"time zone offset out of range: {zone}")
        tz = timezone(sign * offset)
    micros = int(fraction.ljust(6, "0")[:6])
    return datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)


def _check_timestamp(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"must be an ISO-8601 string, got {_json_type(value)}"
    try:
        parsed = _parse_timestamp(value)
    except ValueError as exc:
        return f"{exc}, got {value!r:.60}"
    if parsed - datetime.now(timezone.utc) > _MAX_FUTURE:
        return f"must not be more than 1 h in the future, got {value}"
    return None


def _check_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be a boolean, got {_json_type(value)}"


def _check_model(value: Any) -> str | None:
    if not isinstance(value, str) or not 1 <= len(value) <= 100:
        return f"must be a string of 1..100 characters, got {value!r:.60}"
    return None


def _check_gates(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"must be an array of quality gates, got {_json_type(value)}"
    bad = [gate for gate in value if not isinstance(gate, str) or gate not in _QUALITY_GATES]
    if bad:
        return f"unknown quality gate(s) {bad!r:.80}; allowed: {', '.join(sorted(_QUALITY_GATES))}"
    if len(set(value)) != len(value):
        return "must not contain duplicates"
    return None


def _check_utilization(value: Any) -> str | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"must be a number in 0.0..1.0, got {_json_type(value)}"
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return f"must be in 0.0..1.0, got {value}"
    return None


def _check_language(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > 30):
        return f"must be null or a string of at most 30 characters, got {value!r:.60}"
    return None


_TOKENS = _int_rule(0, 10_000_000)
_COST = _int_rule(0, 100_000_000)
_CONTEXT = _int_rule(0, 100)

#: Every key of a schema 1.0 event and its rule, in the order of the wire-v1 §3 table.
_EVENT_RULES: dict[str, _Rule] = {
    "instance_id": _check_uuid,
    "event_id": _check_uuid,
    "timestamp": _check_timestamp,
    "task_duration_ms": _int_rule(0, 86_400_000),
    "task_type": _enum_rule(_TASK_TYPES),
    "complexity": _enum_rule(_COMPLEXITIES),
    "harness": _enum_rule(_HARNESSES),
    "model": _check_model,
    "provider": _enum_rule(_PROVIDERS),
    "estimated_input_tokens": _TOKENS,
    "estimated_output_tokens": _TOKENS,
    "actual_input_tokens": _TOKENS,
    "actual_output_tokens": _TOKENS,
    "estimated_cost_usd_micros": _COST,
    "actual_cost_usd_micros": _COST,
    "quality_gate_passed": _check_bool,
    "quality_gates_run": _check_gates,
    "quality_gates_failed": _check_gates,
    "context_compactions": _CONTEXT,
    "context_rotations": _CONTEXT,
    "context_utilization_final": _check_utilization,
    "outcome": _enum_rule(_OUTCOMES),
    "retry_count": _int_rule(0, 20),
    "language": _check_language,
    "repo_size_category": _enum_rule(_REPO_SIZES, nullable=True),
}


def _event_problems(event: Any) -> list[tuple[str | None, str]]:
    """``(field, message)`` for everything wrong with one event (field None: the whole event)."""
    if not isinstance(event, dict):
        return [(None, f"event must be a JSON object, got {_json_type(event)}")]
    problems: list[tuple[str | None, str]] = []
    for name, rule in _EVENT_RULES.items():
        if name not in event:
            problems.append((name, "field required"))
            continue
        message = rule(event[name])
        if message is not None:
            problems.append((name, message))
    problems += [(name, "extra field not permitted") for name in event if name not in _EVENT_RULES]
    run, failed = event.get("quality_gates_run"), event.get("quality_gates_failed")
    if isinstance(run, list) and isinstance(failed, list):
        not_run = [gate for gate in failed if gate not in run]
        if not_run:
            problems.append(
                (
                    "quality_gates_failed",
                    f"must be a subset of quality_gates_run, not run: {not_run}",
                )
            )
    return problems


# --- public records ----------------------------------------------------------------------------
def _copy_mapping(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


@attrs.frozen(kw_only=True)
class ScriptedReply:
    """One scripted answer to the next request of an endpoint (see ``FakeTelemetryServer.script``).

    ``body=None`` means the normal body for ``status``: for a 2xx the real verdicts (and the
    events are stored as usual), for 422 the real validation errors, else ``{"detail": ...}``.
    ``store=True`` also stores the events for a non-2xx reply, a custom body, ``drop`` or
    ``hang`` (the server kept them, the reply was lost). Processing and recording happen
    before ``delay``/``drop``/``hang``. ``cut_after=N`` sends only the first N bytes of the
    reply (status line, headers, body) and then resets the connection: a reset mid-response.
    """

    status: int = attrs.field(
        default=202,
        validator=[attrs.validators.instance_of(int), attrs.validators.in_(range(200, 600))],
    )
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_copy_mapping)
    body: bytes | str | Mapping[str, Any] | list[Any] | None = None
    delay: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    drop: bool = False
    hang: bool = False
    store: bool = False
    cut_after: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )

    def __attrs_post_init__(self) -> None:
        if self.drop and self.hang:
            raise ValueError("ScriptedReply: drop and hang exclude each other")
        if self.cut_after is not None and (self.drop or self.hang):
            raise ValueError("ScriptedReply: cut_after excludes drop and hang")


class _Headers(Mapping[str, str]):
    """Read-only request headers whose lookup ignores case (``h["content-type"]``)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            self._items[name.lower()] = (name, value)

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


@attrs.frozen
class RecordedRequest:
    """One request the server received, with what it answered.

    ``headers`` look up case-insensitively; ``body`` is decompressed (``b""`` when it was
    refused for its size); ``json`` is None unless the body is JSON; ``status`` is 0 when the
    connection was dropped or left hanging; ``at`` is ``time.monotonic()`` on arrival.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    json: Any
    status: int
    at: float


# --- request plumbing --------------------------------------------------------------------------
class _BodyError(Exception):
    def __init__(self, status: int, detail: str, *, close: bool = False) -> None:
        super().__init__(detail)
        self.status, self.detail, self.close = status, detail, close


@attrs.frozen
class _Incoming:
    method: str
    path: str
    headers: _Headers
    body: bytes
    body_error: _BodyError | None
    at: float


@attrs.frozen
class _Outcome:
    status: int
    body: Any
    invalid: list[dict[str, Any]] = attrs.Factory(list)
    headers: Mapping[str, str] = attrs.Factory(dict)


@attrs.frozen
class _Plan:
    status: int
    payload: bytes
    headers: Mapping[str, str]
    record_index: int
    delay: float = 0.0
    drop: bool = False
    hang: bool = False
    close: bool = False
    cut_after: int | None = None


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


def _parse_json(body: bytes) -> tuple[bool, Any]:
    try:
        return True, json.loads(body)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return False, None


def _encode(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


def _is_2xx(status: int) -> bool:
    return 200 <= status < 300


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _gunzip(raw: bytes, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise _BodyError(400, f"invalid gzip body: {exc}") from None
    if len(data) > max_bytes:
        raise _BodyError(413, f"decompressed body exceeds the limit of {max_bytes} bytes")
    if not inflater.eof:
        raise _BodyError(400, "invalid gzip body: truncated")
    return data


def _query_values(query: PredictionQuery | Mapping[str, Any]) -> tuple[str, ...]:
    if isinstance(query, PredictionQuery):
        wire: Mapping[str, Any] = query_to_dict(query)
    else:
        wire = query
    values = []
    for key in QUERY_KEYS:
        if key not in wire:
            raise ValueError(f"prediction query lacks {key!r}")
        value = wire[key]
        values.append(str(value.value) if isinstance(value, Enum) else str(value))
    return tuple(values)


class _HTTPServer(ThreadingHTTPServer):
    """One run of the fake: listening socket, handler threads, open connections, stop flag."""

    daemon_threads = True
    # Handler threads are tracked and joined with a deadline by ``stop`` instead of the
    # unbounded join of ``ThreadingMixIn.server_close``.
    block_on_close = False

    def __init__(self, address: tuple[str, int], fake: FakeTelemetryServer) -> None:
        self.fake = fake
        self.stopping = threading.Event()
        self._track = threading.Lock()
        self._handler_threads: set[threading.Thread] = set()
        self._connections: set[socket.socket] = set()
        self._aborted: set[socket.socket] = set()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

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
            name="FakeTelemetryServer-handler",
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

    def join_handlers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._track:
            threads = list(self._handler_threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning(
                    "a FakeTelemetryServer handler did not finish within %.1f s", timeout
                )
                return


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests.Session and the SDK use it
    disable_nagle_algorithm = True  # else each reply waits ~40 ms for a delayed ACK
    server_version = "FakeTelemetryServer/1"
    sys_version = ""
    timeout = 30  # an idle keep-alive connection is closed after this many seconds

    @property
    def _server(self) -> _HTTPServer:
        return cast(_HTTPServer, self.server)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_POST(self) -> None:
        self._serve()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_POST

    def _serve(self) -> None:
        answered = False
        try:
            incoming = self._read_request()
            plan = self._server.fake._handle(incoming)
            answered = self._execute(plan)
        except OSError:
            logger.debug("client connection failed", exc_info=True)
            self.close_connection = True
        except Exception:
            # Never let a bug here kill the server: log it and answer 500 if nothing was sent.
            logger.exception("FakeTelemetryServer failed to handle %s %s", self.command, self.path)
            if not answered:
                try:
                    self._send(500, _encode({KEY_DETAIL: "fake server error"}), {}, close=True)
                except OSError:
                    self.close_connection = True

    def _read_request(self) -> _Incoming:
        at = time.monotonic()
        headers = _Headers(self.headers.items())
        try:
            body, error = self._read_body(), None
        except _BodyError as exc:
            body, error = b"", exc
        return _Incoming(self.command, urlsplit(self.path).path, headers, body, error, at)

    def _read_body(self) -> bytes:
        max_bytes = self._server.fake._max_body_bytes
        transfer = self.headers.get("Transfer-Encoding", "").strip().lower()
        if transfer:
            if transfer != "chunked":
                raise _BodyError(400, f"unsupported Transfer-Encoding {transfer!r}", close=True)
            raw = self._read_chunked(max_bytes)
        else:
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if length < 0:
                    raise ValueError(length)
            except ValueError:
                raise _BodyError(400, "invalid Content-Length", close=True) from None
            if length > max_bytes:
                self._discard(length)
                raise _BodyError(413, f"body of {length} bytes exceeds the limit of {max_bytes}")
            raw = self.rfile.read(length)
            if len(raw) < length:
                raise _BodyError(400, "body shorter than its Content-Length", close=True)
        encoding = self.headers.get(HEADER_CONTENT_ENCODING, "").strip().lower()
        if encoding in ("", "identity"):
            return raw
        if encoding == "gzip":
            return _gunzip(raw, max_bytes)
        raise _BodyError(415, f"unsupported Content-Encoding {encoding!r}")

    def _discard(self, length: int) -> None:
        if length > _DRAIN_LIMIT:
            raise _BodyError(413, f"body of {length} bytes is far too large", close=True)
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)

    def _read_chunked(self, max_bytes: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError(400, "malformed chunked body", close=True) from None
            if size == 0:
                break
            total += size
            if total > _DRAIN_LIMIT:
                raise _BodyError(413, "chunked body is far too large", close=True)
            data = self.rfile.read(size)
            if len(data) < size:
                raise _BodyError(400, "truncated chunked body", close=True)
            if total <= max_bytes:
                parts.append(data)
            self.rfile.readline(1024)  # the CRLF after the chunk
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        if total > max_bytes:
            raise _BodyError(413, f"body of {total} bytes exceeds the limit of {max_bytes}")
        return b"".join(parts)

    def _execute(self, plan: _Plan) -> bool:
        """Carry out ``plan``; True once a reply was sent."""
        stopping = self._server.stopping
        if plan.hang:
            stopping.wait()
            self._abort()
            return False
        if plan.delay > 0 and stopping.wait(plan.delay):
            self._server.fake._mark_unanswered(plan.record_index)
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
        if HEADER_CONTENT_TYPE.lower() not in names:
            self.send_header(HEADER_CONTENT_TYPE, _CONTENT_TYPE_JSON)
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


# --- the server ----------------------------------------------------------------------------------
class FakeTelemetryServer:
    """A real HTTP server on 127.0.0.1 speaking Telemetry API v1, for tests.

    ``api_key=None`` accepts any ``Bearer <64 hex>``; with a key set the header must be exactly
    ``Bearer <api_key>``. A missing or malformed header is answered 401, another well-formed
    key 403. ``reject_invalid="per-event"`` answers 202 with per-event verdicts (storing the
    valid new events); ``"422"`` refuses a batch with any invalid event, FastAPI style.
    A stopped server can be started again: it listens on the same port, with its state kept.
    All methods are thread-safe.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        reject_invalid: Literal["per-event", "422"] = "per-event",
        max_body_bytes: int = 5_000_000,
    ) -> None:
        if reject_invalid not in ("per-event", "422"):
            raise ValueError(f"reject_invalid must be 'per-event' or '422', got {reject_invalid!r}")
        self._host = host
        self._port = port
        self._reject_invalid = reject_invalid
        self._max_body_bytes = max_body_bytes
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._life = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._api_key = api_key
        self._events: list[dict[str, Any]] = []
        self._stored_ids: set[str] = set()
        self._ids_received: list[str] = []
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[str, list[ScriptedReply]] = {EVENTS_PATH: [], PREDICTIONS_PATH: []}
        self._predictions: dict[tuple[str, ...], dict[str, Any]] = {}
        self._queries: list[dict[str, Any]] = []

    # --- lifecycle ---
    def start(self) -> FakeTelemetryServer:
        """Start listening (a no-op when running); returns self."""
        with self._life:
            if self._httpd is not None:
                return self
            httpd = _HTTPServer((self._host, self._port), self)
            self._port = int(httpd.server_address[1])  # a restart reuses the same port
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.02},
                name=f"FakeTelemetryServer:{self._port}",
                daemon=True,
            )
            thread.start()
            self._httpd, self._thread = httpd, thread
        return self

    def stop(self) -> None:
        """Stop listening, release hanging and delayed handlers, close connections and join."""
        with self._life:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
            if httpd is None or thread is None:
                return
            httpd.stopping.set()
            httpd.shutdown()
            httpd.close_connections()
            httpd.server_close()
            thread.join(_STOP_JOIN_SECONDS)
            httpd.join_handlers(_STOP_JOIN_SECONDS)

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
            self._scripts[EVENTS_PATH] = list(replies)

    def script_predictions(self, *replies: ScriptedReply) -> None:
        """Script ``POST /v1/predictions/batch`` like ``script`` (queries are still recorded)."""
        with self._lock:
            self._scripts[PREDICTIONS_PATH] = list(replies)

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
        key = _query_values(query)
        if isinstance(response, PredictionResponse):
            from ._wire.predictions import prediction_to_dict

            stored = prediction_to_dict(response)
        else:
            stored = copy.deepcopy(dict(response))
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
            return copy.deepcopy(self._events)

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
    def _handle(self, incoming: _Incoming) -> _Plan:
        script: ScriptedReply | None = None
        if incoming.path not in (EVENTS_PATH, PREDICTIONS_PATH):
            outcome = _Outcome(404, {KEY_DETAIL: "Not Found"})
        elif incoming.method != "POST":
            outcome = _Outcome(405, {KEY_DETAIL: "Method Not Allowed"}, headers={"Allow": "POST"})
        else:
            with self._lock:
                queue = self._scripts[incoming.path]
                script = queue.pop(0) if queue else None
            if incoming.path == EVENTS_PATH:
                outcome = self._events_outcome(incoming, _commits(script))
            else:
                outcome = self._predictions_outcome(incoming)
        if script is None:
            status, body, headers = outcome.status, outcome.body, dict(outcome.headers)
            plan_args: dict[str, Any] = {}
        else:
            status, body = script.status, _scripted_body(script, outcome, incoming.path)
            headers = dict(script.headers)
            plan_args = {
                "delay": script.delay,
                "drop": script.drop,
                "hang": script.hang,
                "cut_after": script.cut_after,
            }
        unanswered = bool(plan_args.get("drop") or plan_args.get("hang"))
        close = incoming.body_error is not None and incoming.body_error.close
        ok_json, parsed = _parse_json(incoming.body)
        record = RecordedRequest(
            method=incoming.method,
            path=incoming.path,
            headers=incoming.headers,
            body=incoming.body,
            json=parsed if ok_json else None,
            status=0 if unanswered else status,
            at=incoming.at,
        )
        with self._changed:
            self._requests.append(record)
            index = len(self._requests) - 1
            self._changed.notify_all()
        return _Plan(status, _encode(body), headers, index, close=close, **plan_args)

    def _mark_unanswered(self, index: int) -> None:
        with self._lock:
            if index < len(self._requests):
                self._requests[index] = attrs.evolve(self._requests[index], status=0)

    def _check_auth(self, header: str | None) -> _Outcome | None:
        with self._lock:
            expected = self._api_key
        if header is not None and expected is not None and header == f"Bearer {expected}":
            return None
        if header is None or not _BEARER_RE.match(header):
            return _Outcome(
                401,
                {KEY_DETAIL: "missing or malformed Authorization header (Bearer <64 hex>)"},
                headers={"WWW-Authenticate": "Bearer"},
            )
        if expected is not None:
            return _Outcome(403, {KEY_DETAIL: "API key not valid for this instance"})
        return None

    def _events_outcome(self, incoming: _Incoming, commit: bool) -> _Outcome:
        if incoming.body_error is not None:
            return _Outcome(incoming.body_error.status, {KEY_DETAIL: incoming.body_error.detail})
        ok_json, payload = _parse_json(incoming.body)
        events = payload.get(KEY_EVENTS) if isinstance(payload, dict) else None
        if isinstance(events, list):
            ids = [
                e[KEY_EVENT_ID]
                for e in events
                if isinstance(e, dict) and isinstance(e.get(KEY_EVENT_ID), str)
            ]
            with self._lock:
                self._ids_received.extend(ids)
        denied = self._check_auth(incoming.headers.get(HEADER_AUTHORIZATION))
        if denied is not None:
            return denied
        if not ok_json:
            return _Outcome(400, {KEY_DETAIL: "body is not valid JSON"})
        if not isinstance(events, list):
            return _Outcome(
                400, {KEY_DETAIL: f"body must be an object with an {KEY_EVENTS!r} list"}
            )
        if not 1 <= len(events) <= MAX_BATCH_EVENTS:
            return _Outcome(
                400, {KEY_DETAIL: f"a batch holds 1..{MAX_BATCH_EVENTS} events, got {len(events)}"}
            )
        problems = [_event_problems(event) for event in events]
        invalid = [
            {
                KEY_LOC: ["body", KEY_EVENTS, index] + ([field] if field else []),
                KEY_MSG: message,
                "type": "value_error",
            }
            for index, event_problems in enumerate(problems)
            for field, message in event_problems
        ]
        refuse_all = self._reject_invalid == "422" and bool(invalid)
        results: list[dict[str, Any]] = []
        with self._changed:
            seen: set[str] = set()
            for event, event_problems in zip(events, problems, strict=True):
                raw_id = event.get(KEY_EVENT_ID) if isinstance(event, dict) else None
                event_id = "" if raw_id is None else str(raw_id)
                if event_problems:
                    error = "; ".join(f"{f}: {m}" if f else m for f, m in event_problems)
                    results.append(_verdict(event_id, STATUS_REJECTED, error))
                    continue
                key = event_id.lower()
                if key in self._stored_ids or key in seen:
                    results.append(_verdict(event_id, STATUS_DUPLICATE, None))
                    continue
                seen.add(key)
                results.append(_verdict(event_id, STATUS_ACCEPTED, None))
                if commit and not refuse_all:
                    self._stored_ids.add(key)
                    self._events.append(copy.deepcopy(event))
            self._changed.notify_all()
        if refuse_all:
            return _Outcome(422, {KEY_DETAIL: invalid}, invalid)
        counts = Counter(result[KEY_STATUS] for result in results)
        body = {
            STATUS_ACCEPTED: counts[STATUS_ACCEPTED],
            STATUS_REJECTED: counts[STATUS_REJECTED],
            KEY_RESULTS: results,
        }
        return _Outcome(202, body, invalid)

    def _predictions_outcome(self, incoming: _Incoming) -> _Outcome:
        if incoming.body_error is not None:
            return _Outcome(incoming.body_error.status, {KEY_DETAIL: incoming.body_error.detail})
        ok_json, payload = _parse_json(incoming.body)
        if not ok_json:
            return _Outcome(400, {KEY_DETAIL: "body is not valid JSON"})
        queries = payload.get(KEY_QUERIES) if isinstance(payload, dict) else None
        if not isinstance(queries, list):
            return _Outcome(
                400, {KEY_DETAIL: f"body must be an object with a {KEY_QUERIES!r} list"}
            )
        if not 1 <= len(queries) <= MAX_PREDICTION_QUERIES:
            return _Outcome(
                400,
                {KEY_DETAIL: f"1..{MAX_PREDICTION_QUERIES} queries a request, got {len(queries)}"},
            )
        for index, query in enumerate(queries):
            if not isinstance(query, dict) or not all(
                isinstance(query.get(k), str) for k in QUERY_KEYS
            ):
                return _Outcome(
                    400, {KEY_DETAIL: f"queries[{index}] needs string {', '.join(QUERY_KEYS)}"}
                )
        with self._changed:
            self._queries.extend(copy.deepcopy(queries))
            results = [
                copy.deepcopy(
                    self._predictions.get(tuple(q[k] for k in QUERY_KEYS), _NO_PREDICTION)
                )
                for q in queries
            ]
            self._changed.notify_all()
        return _Outcome(200, {KEY_RESULTS: results})


def _verdict(event_id: str, status: str, error: str | None) -> dict[str, Any]:
    return {KEY_EVENT_ID: event_id, KEY_STATUS: status, KEY_ERROR: error}


def _commits(script: ScriptedReply | None) -> bool:
    """Whether a request answered by ``script`` stores its events."""
    if script is None or script.store:
        return True
    unanswered = script.drop or script.hang or script.cut_after is not None
    return _is_2xx(script.status) and script.body is None and not unanswered


def _scripted_body(script: ScriptedReply, outcome: _Outcome, path: str) -> Any:
    if script.body is not None:
        return script.body
    if _is_2xx(script.status):
        if _is_2xx(outcome.status):
            return outcome.body
        if path == EVENTS_PATH:
            return {STATUS_ACCEPTED: 0, STATUS_REJECTED: 0, KEY_RESULTS: []}
        return {KEY_RESULTS: []}
    if script.status == 422 and path == EVENTS_PATH:
        return {KEY_DETAIL: outcome.invalid}
    return {KEY_DETAIL: f"{_phrase(script.status)} (scripted)"}


# --- pytest plugin -------------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:
    __all__ += ["fake_telemetry_server"]

    @pytest.fixture
    def fake_telemetry_server() -> Iterator[FakeTelemetryServer]:
        """A started ``FakeTelemetryServer``, stopped after the test."""
        with FakeTelemetryServer() as server:
            yield server
