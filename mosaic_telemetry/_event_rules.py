"""The rules of an event's fields: what each must be, and how loose input becomes typed.

One rule set, three users: ``TaskCompletionEvent`` checks itself on construction (the
generated ``well_formed`` expression first, ``check_event_fields`` to name every bad field),
``EventBuilder`` adds the "missing" problems, and the wire reader coerces stored JSON with
``coerce_event_fields``. Kept apart from the records (``_models.py``), which hold data only.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from ._enums import Complexity, Harness, Outcome, Provider, QualityGate, RepoSizeCategory, TaskType

__all__ = [
    "EVENT_FIELDS",
    "MAX_COST_MICROS",
    "MAX_DURATION_MS",
    "MAX_TOKENS",
    "check_event_fields",
    "coerce_event_fields",
    "parse_iso_timestamp",
    "well_formed",
]

MAX_DURATION_MS = 86_400_000
MAX_TOKENS = 10_000_000
MAX_COST_MICROS = 100_000_000
MAX_CONTEXT_COUNT = 100
MAX_RETRY_COUNT = 20
MAX_MODEL_LEN = 100
MAX_LANGUAGE_LEN = 30
MAX_FUTURE_SKEW = timedelta(hours=1)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@attrs.frozen
class _Rule:
    """One field's rule, twice: ``check`` returns the problem text (None when the value is
    fine); ``fast`` is a Python expression over ``{v}`` that is true only for values ``check``
    accepts. It may be false for some accepted ones (a UUID subclass, a non-UTC timestamp,
    non-ASCII text): then ``check`` decides, so both paths accept exactly the same values."""

    check: Callable[[object], str | None]
    fast: str


def _int_range(low: int, high: int) -> _Rule:
    def check(value: object) -> str | None:
        if not _is_int(value):
            return f"must be an int in {low:,}..{high:,}, got {type(value).__name__}"
        assert isinstance(value, int)
        if not low <= value <= high:
            return f"must be in {low:,}..{high:,}, got {value:,}"
        return None

    return _Rule(check, f"(type({{v}}) is int and {low} <= {{v}} <= {high})")


def _instance_of(kind: type, label: str) -> _Rule:
    def check(value: object) -> str | None:
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            return f"must be {label}, got {value!r}"
        return None

    return _Rule(check, f"type({{v}}) is {kind.__name__}")


def _check_timestamp(value: object) -> str | None:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        return f"must be a timezone-aware datetime, got {value!r}"
    if value - datetime.now(timezone.utc) > MAX_FUTURE_SKEW:
        return f"must not be more than 1 h in the future, got {value.isoformat()}"
    return None


def _not_unicode(value: str) -> str | None:
    """A problem text when ``value`` holds lone surrogates, which no UTF-8 JSON can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"must be valid Unicode text (no lone surrogates), got {value!r:.60}"
    return None


def _check_model(value: object) -> str | None:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_MODEL_LEN:
        return f"must be a string of 1..{MAX_MODEL_LEN} characters, got {value!r:.60}"
    return _not_unicode(value)


def _check_utilization(value: object) -> str | None:
    if not isinstance(value, float) or math.isnan(value) or not 0.0 <= value <= 1.0:
        return f"must be a float in 0.0..1.0, got {value!r}"
    return None


def _check_gates(value: object) -> str | None:
    if not isinstance(value, tuple) or not all(isinstance(g, QualityGate) for g in value):
        return f"must be a list of QualityGate, got {value!r}"
    if len(set(value)) != len(value):
        return "must not contain duplicates"
    return None


def _check_language(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > MAX_LANGUAGE_LEN):
        return (
            f"must be None or a string of at most {MAX_LANGUAGE_LEN} characters, got {value!r:.60}"
        )
    return None if value is None else _not_unicode(value)


def _check_repo_size(value: object) -> str | None:
    if value is not None and not isinstance(value, RepoSizeCategory):
        return f"must be None or a RepoSizeCategory, got {value!r}"
    return None


_tokens = _int_range(0, MAX_TOKENS)
_cost = _int_range(0, MAX_COST_MICROS)
_context_count = _int_range(0, MAX_CONTEXT_COUNT)
# Exact types only, UTC only, ASCII only: everything else goes to the checks above.
_gates_rule = _Rule(
    _check_gates, "(type({v}) is tuple and {*map(type, {v})} <= GATE and len({*{v}}) == len({v}))"
)

#: The rule of every event field, in wire order (wire-v1 §3).
_RULES: dict[str, _Rule] = {
    "instance_id": _instance_of(uuid.UUID, "a UUID"),
    "event_id": _instance_of(uuid.UUID, "a UUID"),
    "timestamp": _Rule(
        _check_timestamp,
        "(type({v}) is datetime and {v}.tzinfo is UTC and {v} - now(UTC) <= MAX_FUTURE_SKEW)",
    ),
    "task_duration_ms": _int_range(0, MAX_DURATION_MS),
    "task_type": _instance_of(TaskType, "a TaskType"),
    "complexity": _instance_of(Complexity, "a Complexity"),
    "harness": _instance_of(Harness, "a Harness"),
    "model": _Rule(
        _check_model,
        f"(type({{v}}) is str and 1 <= len({{v}}) <= {MAX_MODEL_LEN} and {{v}}.isascii())",
    ),
    "provider": _instance_of(Provider, "a Provider"),
    "estimated_input_tokens": _tokens,
    "estimated_output_tokens": _tokens,
    "actual_input_tokens": _tokens,
    "actual_output_tokens": _tokens,
    "estimated_cost_usd_micros": _cost,
    "actual_cost_usd_micros": _cost,
    "quality_gate_passed": _instance_of(bool, "a bool"),
    "quality_gates_run": _gates_rule,
    "quality_gates_failed": _gates_rule,
    "context_compactions": _context_count,
    "context_rotations": _context_count,
    "context_utilization_final": _Rule(
        _check_utilization, "(type({v}) is float and 0.0 <= {v} <= 1.0)"
    ),
    "outcome": _instance_of(Outcome, "an Outcome"),
    "retry_count": _int_range(0, MAX_RETRY_COUNT),
    "language": _Rule(
        _check_language,
        f"({{v}} is None or (type({{v}}) is str and len({{v}}) <= {MAX_LANGUAGE_LEN}"
        " and {v}.isascii()))",
    ),
    "repo_size_category": _Rule(_check_repo_size, "({v} is None or type({v}) is RepoSizeCategory)"),
}

#: Every key of an event on the wire, in order.
EVENT_FIELDS: tuple[str, ...] = tuple(_RULES)


def _make_well_formed() -> Callable[[Any], bool]:
    """``event -> bool``: every rule's fast expression, ``and``-ed into one generated function
    (as attrs generates ``__init__``), plus failed ⊆ run. True means valid; False means "ask
    ``check_event_fields``", which names the problems (or finds none)."""
    env: dict[str, Any] = {
        "UUID": uuid.UUID,
        "datetime": datetime,
        "UTC": timezone.utc,
        "now": datetime.now,
        "MAX_FUTURE_SKEW": MAX_FUTURE_SKEW,
        "GATE": {QualityGate},
        **{kind.__name__: kind for kind in (TaskType, Complexity, Harness, Provider, Outcome)},
        "RepoSizeCategory": RepoSizeCategory,
    }
    terms = [rule.fast.replace("{v}", f"e.{name}") for name, rule in _RULES.items()]
    terms.append("{*e.quality_gates_failed} <= {*e.quality_gates_run}")
    source = (
        "def well_formed(e):\n    return (\n        " + "\n        and ".join(terms) + "\n    )\n"
    )
    code = compile(source, "<generated mosaic_telemetry._event_rules.well_formed>", "exec")
    exec(code, env)  # noqa: S102 - our own generated code, from the rules above
    function: Callable[[Any], bool] = env["well_formed"]
    return function


#: ``event -> bool``: True when every field of a built event keeps its rule (the fast path).
well_formed = _make_well_formed()


def check_event_fields(values: Mapping[str, Any]) -> list[str]:
    """Return ``"field: rule"`` for every present field of ``values`` that breaks its rule."""
    problems = []
    for name, rule in _RULES.items():
        if name in values:
            problem = rule.check(values[name])
            if problem is not None:
                problems.append(f"{name}: {problem}")
    run, failed = values.get("quality_gates_run"), values.get("quality_gates_failed")
    if isinstance(run, tuple) and isinstance(failed, tuple):
        extra = [str(gate) for gate in failed if gate not in run]
        if extra:
            problems.append(
                f"quality_gates_failed: must be a subset of quality_gates_run, "
                f"not run: {', '.join(extra)}"
            )
    return problems


def parse_iso_timestamp(value: str) -> datetime:
    """Parse ISO-8601 (``Z`` accepted on Python 3.10 too); raises ValueError."""
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    return datetime.fromisoformat(value)


def _gates(value: Any) -> Any:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return value
    return tuple(
        QualityGate(g) if type(g) is not QualityGate and isinstance(g, str) else g for g in value
    )


def _uuid(value: Any) -> Any:
    return uuid.UUID(value) if isinstance(value, str) else value


@functools.lru_cache(maxsize=16)
def _instance_uuid(value: str) -> uuid.UUID:
    # A process builds every event with the same instance id text: parse it once (1.5 µs).
    return uuid.UUID(value)


def _enum(kind: type[Any]) -> Callable[[Any], Any]:
    return lambda value: kind(value) if isinstance(value, str) else value


#: How a loosely typed value (text, a list, an int for a float) becomes the model's type, per
#: field. The one coercion of the SDK: EventBuilder.build() and the wire reader both use it.
_COERCE: dict[str, Callable[[Any], Any]] = {
    "instance_id": lambda v: _instance_uuid(v) if isinstance(v, str) else v,
    "event_id": _uuid,
    "timestamp": lambda v: parse_iso_timestamp(v) if isinstance(v, str) else v,
    "task_type": _enum(TaskType),
    "complexity": _enum(Complexity),
    "harness": _enum(Harness),
    "provider": _enum(Provider),
    "outcome": _enum(Outcome),
    "repo_size_category": _enum(RepoSizeCategory),
    "context_utilization_final": lambda v: float(v) if _is_int(v) else v,
    "quality_gates_run": _gates,
    "quality_gates_failed": _gates,
}


#: A value of exactly this type is what its coercion would return unchanged: skipped.
_COERCED: dict[str, type] = {
    "instance_id": uuid.UUID,
    "event_id": uuid.UUID,
    "timestamp": datetime,
    "task_type": TaskType,
    "complexity": Complexity,
    "harness": Harness,
    "provider": Provider,
    "outcome": Outcome,
    "repo_size_category": RepoSizeCategory,
    "context_utilization_final": float,
}


def coerce_event_fields(values: dict[str, Any]) -> list[str]:
    """Coerce ``values`` in place to the model's types; ``"field: cannot read ..."`` for each
    value that cannot be read (that field is removed, so the rules do not report it twice)."""
    problems = []
    for name, coerce in _COERCE.items():
        if name in values:
            value = values[name]
            if type(value) is _COERCED.get(name):
                continue
            try:
                values[name] = coerce(value)
            except (ValueError, TypeError) as exc:
                problems.append(f"{name}: cannot read {value!r:.60} ({exc})")
                del values[name]
    return problems
