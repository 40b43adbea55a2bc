"""Everything the SDK knows about the wire format of Telemetry API v1, in one module.

Paths, headers and JSON keys of ``wire-v1.md`` live here and nowhere else, so a server that
differs needs a change in this file only. Events are unstructured by one private cattrs
converter (strict: our own data); their JSON text, on the ``track()`` hot path, is written by a
function generated once from the model's fields that writes exactly what ``json.dumps`` makes
of that converter's dict. Server replies are read by a second, lenient converter (unknown keys
ignored, unknown enum strings kept as text, a bad result skipped).
"""

from __future__ import annotations

import json
import logging
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from enum import Enum
from functools import lru_cache
from json.encoder import encode_basestring  # what json.dumps(..., ensure_ascii=False) uses
from typing import TYPE_CHECKING, Any

from ._enums import (
    Complexity,
    Confidence,
    Harness,
    Outcome,
    Provider,
    QualityGate,
    RepoSizeCategory,
    TaskType,
)
from ._exceptions import EventValidationError
from ._models import (
    EVENT_FIELDS,
    PredictionQuery,
    PredictionResponse,
    TaskCompletionEvent,
    check_event_fields,
)

if TYPE_CHECKING:
    import cattrs

logger = logging.getLogger("mosaic_telemetry")

# --- HTTP contract (wire-v1 §1, §2) -------------------------------------------------------
EVENTS_PATH = "/v1/events/batch"
PREDICTIONS_PATH = "/v1/predictions/batch"
SCHEMA_VERSION = "1.0"
HEADER_AUTHORIZATION = "Authorization"
HEADER_CONTENT_TYPE = "Content-Type"
HEADER_CONTENT_ENCODING = "Content-Encoding"
HEADER_USER_AGENT = "User-Agent"
HEADER_SCHEMA_VERSION = "X-Telemetry-Schema-Version"
HEADER_RETRY_AFTER = "Retry-After"
CONTENT_TYPE_JSON = "application/json"
USER_AGENT_PREFIX = "mosaicstack-telemetry-python/"
MAX_BATCH_EVENTS = 100
MAX_PREDICTION_QUERIES = 50
#: Replies are never trusted to be small: this much is read at most.
MAX_REPLY_BYTES = 1 << 20

# --- JSON keys of requests and replies --------------------------------------------------
KEY_EVENTS = "events"
KEY_QUERIES = "queries"
KEY_RESULTS = "results"
KEY_EVENT_ID = "event_id"
KEY_STATUS = "status"
KEY_ERROR = "error"
KEY_DETAIL = "detail"
KEY_LOC = "loc"
KEY_MSG = "msg"
STATUS_ACCEPTED = "accepted"
STATUS_DUPLICATE = "duplicate"
STATUS_REJECTED = "rejected"
QUERY_KEYS = ("task_type", "model", "provider", "complexity")


def auth_header(api_key: str) -> str:
    """The value of the Authorization header for ``api_key``."""
    return f"Bearer {api_key}"


def event_headers(api_key: str, version: str, *, gzip: bool = False) -> dict[str, str]:
    """Headers of an events batch request."""
    headers = {
        HEADER_AUTHORIZATION: auth_header(api_key),
        HEADER_CONTENT_TYPE: CONTENT_TYPE_JSON,
        HEADER_USER_AGENT: USER_AGENT_PREFIX + version,
        HEADER_SCHEMA_VERSION: SCHEMA_VERSION,
    }
    if gzip:
        headers[HEADER_CONTENT_ENCODING] = "gzip"
    return headers


def prediction_headers(version: str) -> dict[str, str]:
    """Headers of a predictions request: public, so no Authorization."""
    return {
        HEADER_CONTENT_TYPE: CONTENT_TYPE_JSON,
        HEADER_USER_AGENT: USER_AGENT_PREFIX + version,
        HEADER_SCHEMA_VERSION: SCHEMA_VERSION,
    }


# --- events -------------------------------------------------------------------------------
def format_timestamp(value: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix and microseconds, as the wire expects."""
    if value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" becomes "Z"


def parse_timestamp(value: str) -> datetime:
    """Parse ISO-8601 (``Z`` accepted on Python 3.10 too); raises ValueError."""
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    return datetime.fromisoformat(value)


def _make_event_converter() -> cattrs.Converter:
    import cattrs

    converter = cattrs.Converter()
    converter.register_unstructure_hook(uuid.UUID, str)
    converter.register_unstructure_hook(datetime, format_timestamp)
    converter.register_unstructure_hook_func(
        lambda kind: kind == tuple[QualityGate, ...], lambda gates: [gate.value for gate in gates]
    )
    return converter


@lru_cache(maxsize=1)
def _event_unstructure() -> Any:
    # cattrs (≈40 ms to import) is loaded on first use, never by ``import mosaic_telemetry``.
    return _make_event_converter().get_unstructure_hook(TaskCompletionEvent)


def event_to_dict(event: TaskCompletionEvent) -> dict[str, Any]:
    """The wire dict of ``event``: exactly the keys of schema 1.0, in order."""
    result: dict[str, Any] = _event_unstructure()(event)
    return result


def event_to_json(event: TaskCompletionEvent) -> str:
    """The compact JSON text stored in the outbox and sent as is.

    Exactly ``json.dumps(event_to_dict(event), separators=(",", ":"), ensure_ascii=False)``
    (a test holds them equal), written by :func:`_event_json_writer` in a quarter of the time:
    it is on the ``track()`` hot path.
    """
    return _event_json_writer()(event)


#: How a value of each scalar type is written as JSON: a Python expression around ``{v}``.
_JSON_WRITERS: dict[Any, str] = {
    uuid.UUID: "'\"' + str({v}) + '\"'",  # hex digits and dashes: nothing to escape
    datetime: "'\"' + format_timestamp({v}) + '\"'",  # digits, '-', ':', '.', 'T', 'Z'
    bool: "('true' if {v} else 'false')",
    int: "int_repr({v})",  # as json.dumps writes an int
    float: "float_repr({v})",  # as json.dumps writes a finite float (the model has no NaN)
    str: "encode_basestring({v})",
}


def _json_expression(kind: Any, value: str, env: dict[str, Any]) -> str:
    """A Python expression that writes ``value`` (an expression of type ``kind``) as JSON."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [k for k in typing.get_args(kind) if k is not type(None)]
        return f"('null' if {value} is None else {_json_expression(inner, value, env)})"
    if origin is tuple:
        item = _json_expression(typing.get_args(kind)[0], "item", env)
        return f"'[' + ','.join([{item} for item in {value}]) + ']'"
    if isinstance(kind, type) and issubclass(kind, Enum):
        table = f"_json_{kind.__name__}"
        env[table] = {member: encode_basestring(member.value) for member in kind}
        return f"{table}[{value}]"
    if kind not in _JSON_WRITERS:
        raise TypeError(f"no JSON writer for {kind!r}")
    return _JSON_WRITERS[kind].format(v=value)


@lru_cache(maxsize=1)
def _event_json_writer() -> Callable[[TaskCompletionEvent], str]:
    """``event -> JSON text``, generated from the model's fields on first use.

    One f-string with an expression per field, as attrs and cattrs generate their code: no
    intermediate dict, no generic encoder walking it. A field of a type without a writer
    fails here, at the first ``track()`` (and in the tests), never silently.
    """
    import attrs

    env: dict[str, Any] = {
        "encode_basestring": encode_basestring,
        "format_timestamp": format_timestamp,
        "int_repr": int.__repr__,
        "float_repr": float.__repr__,
    }
    kinds = typing.get_type_hints(TaskCompletionEvent)
    parts = [
        f"{json.dumps(f.name)}:{{{_json_expression(kinds[f.name], f'e.{f.name}', env)}}}"
        for f in attrs.fields(TaskCompletionEvent)
    ]
    source = f"def event_json(e):\n    return f'''{{{{{','.join(parts)}}}}}'''\n"
    exec(source, env)  # noqa: S102 - our own generated code, from the model's field types
    writer: Callable[[TaskCompletionEvent], str] = env["event_json"]
    return writer


_ENUM_FIELDS: dict[str, type[Any]] = {
    "task_type": TaskType,
    "complexity": Complexity,
    "harness": Harness,
    "provider": Provider,
    "outcome": Outcome,
    "repo_size_category": RepoSizeCategory,
}


def _coerce_field(name: str, value: Any, problems: list[str]) -> Any:
    """Turn a JSON value into the model's type, noting a problem instead of raising."""
    try:
        if name in ("instance_id", "event_id") and isinstance(value, str):
            return uuid.UUID(value)
        if name == "timestamp" and isinstance(value, str):
            return parse_timestamp(value)
        if name in _ENUM_FIELDS and isinstance(value, str):
            return _ENUM_FIELDS[name](value)
        if name in ("quality_gates_run", "quality_gates_failed") and isinstance(value, list):
            return tuple(QualityGate(gate) for gate in value)
    except ValueError as exc:
        problems.append(f"{name}: cannot read {value!r:.60} ({exc})")
    return value


def event_from_dict(data: Mapping[str, Any]) -> TaskCompletionEvent:
    """Read a wire dict back into an event; raises EventValidationError naming every field."""
    if not isinstance(data, Mapping):
        raise EventValidationError([f"event: must be a JSON object, got {type(data).__name__}"])
    problems: list[str] = []
    values = {
        name: _coerce_field(name, data[name], problems) for name in data if name in EVENT_FIELDS
    }
    unreadable = {p.split(":", 1)[0] for p in problems}
    problems += [p for p in check_event_fields(values) if p.split(":", 1)[0] not in unreadable]
    problems += [f"{name}: required" for name in EVENT_FIELDS if name not in data]
    problems += [f"{name}: unknown key" for name in data if name not in EVENT_FIELDS]
    if problems:
        raise EventValidationError(problems)
    return TaskCompletionEvent(**values)


def batch_body(event_texts: Sequence[str]) -> bytes:
    """The request body of an events batch, built from stored JSON texts without re-encoding."""
    return ('{"' + KEY_EVENTS + '":[' + ",".join(event_texts) + "]}").encode("utf-8")


# --- event batch replies ---------------------------------------------------------------------
def parse_batch_results(payload: Any) -> dict[str, tuple[str, str | None]] | None:
    """Per-event verdicts of a 2xx reply: ``{event_id: (status, error)}``.

    Returns None when the reply has no readable ``results`` (then all count as accepted).
    Entries that are not readable are skipped.
    """
    if not isinstance(payload, Mapping):
        return None
    results = payload.get(KEY_RESULTS)
    if not isinstance(results, list):
        return None
    verdicts: dict[str, tuple[str, str | None]] = {}
    for item in results:
        if not isinstance(item, Mapping):
            continue
        event_id, status, error = item.get(KEY_EVENT_ID), item.get(KEY_STATUS), item.get(KEY_ERROR)
        if isinstance(event_id, str) and status in (
            STATUS_ACCEPTED,
            STATUS_DUPLICATE,
            STATUS_REJECTED,
        ):
            verdicts[event_id] = (status, error if isinstance(error, str) else None)
    return verdicts


def parse_invalid_indices(payload: Any, batch_len: int) -> dict[int, str]:
    """Batch indices named by a FastAPI-style 422 reply (``loc = [body, events, INDEX]``)."""
    indices: dict[int, str] = {}
    detail = payload.get(KEY_DETAIL) if isinstance(payload, Mapping) else None
    if not isinstance(detail, list):
        return indices
    for item in detail:
        if not isinstance(item, Mapping):
            continue
        loc, msg = item.get(KEY_LOC), item.get(KEY_MSG)
        if not isinstance(loc, list) or len(loc) < 3 or loc[1] != KEY_EVENTS:
            continue
        index = loc[2]
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < batch_len:
            field = ".".join(str(part) for part in loc[3:]) or "event"
            text = f"{field}: {msg}" if isinstance(msg, str) else field
            indices[index] = f"{indices[index]}; {text}" if index in indices else text
    return indices


def parse_detail(payload: Any) -> str:
    """A short text of an error reply's ``detail`` for logs and dead letters."""
    detail = payload.get(KEY_DETAIL) if isinstance(payload, Mapping) else payload
    text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    return text[:500]


# --- predictions ------------------------------------------------------------------------------
def query_to_dict(query: PredictionQuery) -> dict[str, str]:
    """The wire dict of a prediction query."""
    return {
        "task_type": query.task_type.value,
        "model": query.model,
        "provider": query.provider.value,
        "complexity": query.complexity.value,
    }


def query_key(query: PredictionQuery) -> str:
    """A stable text key of a query, for the on-disk prediction cache."""
    return json.dumps(query_to_dict(query), sort_keys=True, separators=(",", ":"))


def predictions_body(queries: Sequence[PredictionQuery]) -> bytes:
    """The request body of a predictions batch."""
    return json.dumps({KEY_QUERIES: [query_to_dict(q) for q in queries]}).encode("utf-8")


def _structure_confidence(value: Any, _type: Any) -> Confidence | str:
    if not isinstance(value, str):
        raise TypeError(f"confidence must be a string, got {value!r}")
    try:
        return Confidence(value)
    except ValueError:
        return value


def _structure_datetime(value: Any, _type: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"must be an ISO-8601 string, got {value!r}")
    parsed = parse_timestamp(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _strict_scalar(kind: type[Any]) -> Any:
    """A structure hook that accepts ``kind`` only (no bool as int, no "5" as 5; int as float)."""

    def structure(value: Any, _type: Any) -> Any:
        if kind is not bool and isinstance(value, bool):
            raise TypeError(f"expected {kind.__name__}, got {value!r}")
        if isinstance(value, kind):
            return value
        if kind is float and isinstance(value, int):
            return float(value)
        raise TypeError(f"expected {kind.__name__}, got {value!r:.40}")

    return structure


@lru_cache(maxsize=1)
def _reply_converter() -> cattrs.Converter:
    import cattrs

    converter = cattrs.Converter(forbid_extra_keys=False)
    converter.register_structure_hook(Confidence | str, _structure_confidence)
    converter.register_structure_hook(datetime | None, _structure_datetime)
    for kind in (int, float, str, bool):
        converter.register_structure_hook(kind, _strict_scalar(kind))
    return converter


def prediction_from_dict(payload: Any) -> PredictionResponse:
    """Read one PredictionResponse leniently; raises ValueError naming the bad field."""
    import cattrs

    try:
        result: PredictionResponse = _reply_converter().structure(payload, PredictionResponse)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, cattrs.BaseValidationError):
            lines = cattrs.transform_error(exc, path="result")
            raise ValueError("; ".join(lines)) from None
        raise ValueError(str(exc)) from None
    return result


def prediction_to_dict(response: PredictionResponse) -> dict[str, Any]:
    """The JSON-ready dict of a response, for the on-disk cache (read by prediction_from_dict)."""
    import cattrs

    converter = cattrs.Converter()
    converter.register_unstructure_hook(datetime, lambda d: d.isoformat())
    result: dict[str, Any] = converter.unstructure(response)
    return result


def prediction_results(payload: Any) -> list[Any]:
    """The raw ``results`` list of a predictions reply (empty when unreadable)."""
    results = payload.get(KEY_RESULTS) if isinstance(payload, Mapping) else None
    return results if isinstance(results, list) else []
