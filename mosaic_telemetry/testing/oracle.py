"""What a wire-v1 server says about a request: the test kit's own reading of ``wire-v1.md``.

The fake server and ``MockTransport.accepting()`` judge requests here. Every path, JSON key,
status word and enum string below is written out again from the spec, on purpose: nothing is
imported from the SDK's wire layer or its validation, so an SDK bug (a renamed key, a missing
field, a bool sent as a count, a wrong path) is caught here instead of being agreed with.
It imports nothing from the SDK at all.

Everything here is pure (no I/O, no locks); the callers own storage and locking.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Container, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

__all__ = [
    "ACCEPTED", "COMPLEXITIES", "CONFIDENCES", "DUPLICATE", "EVENTS_PATH", "EVENT_RULES",
    "HARNESSES", "MAX_BATCH_EVENTS", "MAX_PREDICTION_QUERIES", "OUTCOMES", "PREDICTIONS_PATH",
    "PROVIDERS", "QUALITY_GATES", "QUERY_KEYS", "REJECTED", "REPO_SIZES", "TASK_TYPES",
    "Judgement", "Problem", "Reply", "Rule", "batch_events", "check_authorization", "detail",
    "empty_verdicts", "event_problems", "judge", "parse_timestamp",
    "received_ids"
]  # fmt: skip

# --- wire-v1 §1/§2: paths, limits, keys, verdicts ---------------------------------------------
EVENTS_PATH = "/v1/events/batch"
PREDICTIONS_PATH = "/v1/predictions/batch"
MAX_BATCH_EVENTS = 100
MAX_PREDICTION_QUERIES = 50
QUERY_KEYS = ("task_type", "model", "provider", "complexity")
ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"

# --- wire-v1 §4: enums as wire strings ---------------------------------------------------------
TASK_TYPES = frozenset(
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
COMPLEXITIES = frozenset(["low", "medium", "high", "critical"])
HARNESSES = frozenset(
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
PROVIDERS = frozenset(
    ["anthropic", "openai", "openrouter", "ollama", "google", "mistral", "custom", "unknown"]
)
QUALITY_GATES = frozenset(["build", "lint", "test", "coverage", "typecheck", "security"])
OUTCOMES = frozenset(["success", "failure", "partial", "timeout"])
REPO_SIZES = frozenset(["tiny", "small", "medium", "large", "huge"])
CONFIDENCES = frozenset(["none", "low", "medium", "high"])

# --- wire-v1 §3: the event schema, one rule per key ---------------------------------------------
_UUID_RE = re.compile(r"\A[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
_TIMESTAMP_RE = re.compile(
    r"\A(\d{4})-(\d{2})-(\d{2})T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)(?:\.(\d{1,9}))?"
    r"(Z|[+-]\d{2}:\d{2})\Z"
)
_BEARER_RE = re.compile(r"\ABearer [0-9a-fA-F]{64}\Z")
_MAX_FUTURE = timedelta(hours=1)

Rule = Callable[[Any], "str | None"]
#: ``(field, message)``; field None means the whole event.
Problem = tuple["str | None", str]


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


def _int_rule(low: int, high: int) -> Rule:
    def check(value: Any) -> str | None:
        if type(value) is not int:  # bools are not ints on the wire (and JSON has no subclasses)
            return f"must be an integer in {low}..{high}, got {_json_type(value)}"
        if not low <= value <= high:
            return f"must be in {low}..{high}, got {value}"
        return None

    return check


def _enum_rule(values: frozenset[str], *, nullable: bool = False) -> Rule:
    allowed = ", ".join(sorted(values))

    def check(value: Any) -> str | None:
        if isinstance(value, str) and value in values:
            return None
        if value is None and nullable:
            return None
        return f"must be one of {allowed}{' or null' if nullable else ''}, got {value!r:.60}"

    return check


def _check_uuid(value: Any) -> str | None:
    if not isinstance(value, str) or not _UUID_RE.match(value):
        return f"must be a UUID string, got {value!r:.60}"
    return None


def parse_timestamp(text: str) -> datetime:
    """ISO-8601 with a time zone (``Z`` or ``±HH:MM``); raises ValueError."""
    match = _TIMESTAMP_RE.match(text)
    if not match:
        raise ValueError("must be ISO-8601 with a time zone, e.g. 2024-01-01T12:00:00.000000Z")
    try:
        # The regex fixed the shape, so this agrees with the code below; it is 4x faster.
        return datetime.fromisoformat(text)
    except ValueError:
        pass  # Python 3.10 reads no "Z" and no 9-digit fraction; a bad date is named below
    year, month, day, hour, minute, second = map(int, match.groups()[:6])
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


def _check_timestamp(value: Any, latest: datetime | None = None) -> str | None:
    """A rule with one more argument: ``latest`` is the last allowed time (now + 1 h)."""
    if not isinstance(value, str):
        return f"must be an ISO-8601 string, got {_json_type(value)}"
    try:
        parsed = parse_timestamp(value)
    except ValueError as exc:
        return f"{exc}, got {value!r:.60}"
    if parsed > (latest or datetime.now(timezone.utc) + _MAX_FUTURE):
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
    try:
        known = QUALITY_GATES.issuperset(value)  # the usual case, in C
    except TypeError:  # an unhashable item
        known = False
    bad = [] if known else [g for g in value if not isinstance(g, str) or g not in QUALITY_GATES]
    if bad:
        return f"unknown quality gate(s) {bad!r:.80}; allowed: {', '.join(sorted(QUALITY_GATES))}"
    if len(set(value)) != len(value):
        return "must not contain duplicates"
    return None


def _check_utilization(value: Any) -> str | None:
    if type(value) not in (int, float):
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
EVENT_RULES: Mapping[str, Rule] = {
    "instance_id": _check_uuid,
    "event_id": _check_uuid,
    "timestamp": _check_timestamp,
    "task_duration_ms": _int_rule(0, 86_400_000),
    "task_type": _enum_rule(TASK_TYPES),
    "complexity": _enum_rule(COMPLEXITIES),
    "harness": _enum_rule(HARNESSES),
    "model": _check_model,
    "provider": _enum_rule(PROVIDERS),
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
    "outcome": _enum_rule(OUTCOMES),
    "retry_count": _int_rule(0, 20),
    "language": _check_language,
    "repo_size_category": _enum_rule(REPO_SIZES, nullable=True),
}
_RULES = tuple(EVENT_RULES.items())


def event_problems(event: Any, now: datetime | None = None) -> list[Problem]:
    """Everything wrong with one event against wire-v1 §3 (empty: valid), field by field.

    ``now`` (aware) is the server's clock for the "at most 1 h ahead" rule; default: now.
    """
    if not isinstance(event, dict):
        return [(None, f"event must be a JSON object, got {_json_type(event)}")]
    latest = (now or datetime.now(timezone.utc)) + _MAX_FUTURE
    problems: list[Problem] = []
    for name, rule in _RULES:
        if name not in event:
            problems.append((name, "field required"))
            continue
        value = event[name]
        message = rule(value) if rule is not _check_timestamp else _check_timestamp(value, latest)
        if message is not None:
            problems.append((name, message))
    if len(event) > len(_RULES) or problems:
        problems += [
            (name, "extra field not permitted") for name in event if name not in EVENT_RULES
        ]
    run, failed = event.get("quality_gates_run"), event.get("quality_gates_failed")
    if isinstance(run, list) and isinstance(failed, list) and failed:
        not_run = [gate for gate in failed if gate not in run]
        if not_run:
            problems.append(
                (
                    "quality_gates_failed",
                    f"must be a subset of quality_gates_run, not run: {not_run}",
                )
            )
    return problems


# --- replies -------------------------------------------------------------------------------------
@attrs.frozen
class Reply:
    """A status and a JSON-ready body; ``invalid`` keeps the 422-style errors of the batch."""

    status: int
    body: Any
    invalid: list[dict[str, Any]] = attrs.Factory(list)
    headers: Mapping[str, str] = attrs.Factory(dict)


def detail(status: int, text: str, **headers: str) -> Reply:
    """An error reply ``{"detail": text}``."""
    return Reply(status, {"detail": text}, headers=headers)


def check_authorization(header: str | None, expected_key: str | None) -> Reply | None:
    """None when ``header`` may submit events, else the 401/403 reply (wire-v1 §1).

    ``expected_key=None`` accepts any well-formed ``Bearer <64 hex>``.
    """
    if header is not None and expected_key is not None and header == f"Bearer {expected_key}":
        return None
    if header is None or not _BEARER_RE.match(header):
        return detail(
            401,
            "missing or malformed Authorization header (Bearer <64 hex>)",
            **{"WWW-Authenticate": "Bearer"},
        )
    if expected_key is not None:
        return detail(403, "API key not valid for this instance")
    return None


def received_ids(payload: Any) -> list[str]:
    """Every string ``event_id`` of an events body, valid or not, duplicates included."""
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        return []
    return [
        e["event_id"] for e in events if isinstance(e, dict) and isinstance(e.get("event_id"), str)
    ]


def batch_events(ok_json: bool, payload: Any) -> list[Any] | Reply:
    """The events list of a well-formed envelope, or the 400 reply that refuses it."""
    if not ok_json:
        return detail(400, "body is not valid JSON")
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        return detail(400, "body must be an object with an 'events' list")
    if not 1 <= len(events) <= MAX_BATCH_EVENTS:
        return detail(400, f"a batch holds 1..{MAX_BATCH_EVENTS} events, got {len(events)}")
    return events


@attrs.frozen
class Judgement:
    """The reply to an events batch and the new valid events it would store (key, event)."""

    reply: Reply
    new: list[tuple[str, dict[str, Any]]]


def judge(
    events: Sequence[Any],
    problems: Sequence[Sequence[Problem]],
    stored: Container[str],
    *,
    refuse_invalid: bool = False,
) -> Judgement:
    """Per-event verdicts for ``events`` (with their ``event_problems``) given the stored keys.

    A key is the lowercased ``event_id``. Invalid events are "rejected" with the field named;
    an id already stored, or repeated in the batch, is a "duplicate". With ``refuse_invalid``
    any invalid event makes the whole batch a FastAPI-style 422 that stores nothing.
    """
    invalid = [
        {
            "loc": ["body", "events", index] + ([field] if field else []),
            "msg": message,
            "type": "value_error",
        }
        for index, found in enumerate(problems)
        for field, message in found
    ]
    results: list[dict[str, Any]] = []
    new: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for event, found in zip(events, problems, strict=True):
        raw_id = event.get("event_id") if isinstance(event, dict) else None
        event_id = "" if raw_id is None else str(raw_id)
        if found:
            error = "; ".join(f"{f}: {m}" if f else m for f, m in found)
            results.append({"event_id": event_id, "status": REJECTED, "error": error})
            continue
        key = event_id.lower()
        if key in seen or key in stored:
            results.append({"event_id": event_id, "status": DUPLICATE, "error": None})
            continue
        seen.add(key)
        results.append({"event_id": event_id, "status": ACCEPTED, "error": None})
        new.append((key, event))
    if refuse_invalid and invalid:
        return Judgement(Reply(422, {"detail": invalid}, invalid), [])
    counts = Counter(result["status"] for result in results)
    body = {ACCEPTED: counts[ACCEPTED], REJECTED: counts[REJECTED], "results": results}
    return Judgement(Reply(202, body, invalid), new)


def empty_verdicts(path: str) -> Any:
    """A 2xx body that says nothing about any event (or query) of ``path``."""
    return {ACCEPTED: 0, REJECTED: 0, "results": []} if path == EVENTS_PATH else {"results": []}
