"""Frozen, keyword-only data models. They know nothing of JSON, HTTP or SQL.

``TaskCompletionEvent`` checks itself on construction against the rules of
``_event_rules`` and raises one ``EventValidationError`` naming every bad field.
Prediction models are read leniently by the codec; here they are plain holders.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

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
from ._event_rules import check_event_fields, well_formed
from ._exceptions import EventValidationError

__all__ = [
    "PredictionData",
    "PredictionMetadata",
    "PredictionQuery",
    "PredictionResponse",
    "QualityPrediction",
    "TaskCompletionEvent",
    "TokenDistribution",
]


def _gate_tuple(value: Any) -> Any:
    """Lists become tuples so the frozen event stays hashable; anything else is checked later."""
    return tuple(value) if isinstance(value, list) else value


_DUMP_MODES = ("python", "json")


class _Serializable:
    """``to_dict()`` / ``to_json()`` and pydantic's names for them, for code moving from upstream.

    The models stay dumb: each subclass's ``to_dict`` / ``to_json`` delegates to the codec
    (``_wire``, imported when called: it imports this module), which alone knows the wire format.
    """

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def to_json(self) -> str:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def model_dump(self, *, mode: str = "python") -> dict[str, Any]:
        """Migration alias of ``to_dict()`` (pydantic's name); values are JSON types in any mode."""
        if mode not in _DUMP_MODES:
            raise ValueError(f"mode: must be 'python' or 'json', got {mode!r}")
        return self.to_dict()

    def model_dump_json(self) -> str:
        """Migration alias of ``to_json()`` (pydantic's name)."""
        return self.to_json()


@attrs.frozen(kw_only=True)
class TaskCompletionEvent(_Serializable):
    """One finished agent task, as sent to ``POST /v1/events/batch`` (schema 1.0)."""

    instance_id: uuid.UUID
    event_id: uuid.UUID
    timestamp: datetime
    task_duration_ms: int
    task_type: TaskType
    complexity: Complexity
    harness: Harness
    model: str
    provider: Provider
    estimated_input_tokens: int
    estimated_output_tokens: int
    actual_input_tokens: int
    actual_output_tokens: int
    estimated_cost_usd_micros: int
    actual_cost_usd_micros: int
    quality_gate_passed: bool
    quality_gates_run: tuple[QualityGate, ...] = attrs.field(converter=_gate_tuple)
    quality_gates_failed: tuple[QualityGate, ...] = attrs.field(converter=_gate_tuple)
    context_compactions: int
    context_rotations: int
    context_utilization_final: float
    outcome: Outcome
    retry_count: int = 0
    language: str | None = None
    repo_size_category: RepoSizeCategory | None = None

    def __attrs_post_init__(self) -> None:
        # One generated expression for a well-typed event; the detailed checks only when it
        # fails, to name every bad field (or to accept what only they can tell is fine).
        if not well_formed(self):
            problems = check_event_fields(attrs.asdict(self, recurse=False))
            if problems:
                raise EventValidationError(problems)

    def to_dict(self) -> dict[str, Any]:
        """The wire dict of schema 1.0: exactly what ``track()`` sends for this event."""
        from ._wire.events import event_to_dict

        return event_to_dict(self)

    def to_json(self) -> str:
        """The compact JSON text stored in the outbox and sent as is."""
        from ._wire.events import event_to_json

        return event_to_json(self)


def _task_type(value: TaskType | str) -> TaskType:
    return TaskType(value)


def _provider(value: Provider | str) -> Provider:
    return Provider(value)


def _complexity(value: Complexity | str) -> Complexity:
    return Complexity(value)


@attrs.frozen(kw_only=True)
class PredictionQuery(_Serializable):
    """What to predict: the cache key of a prediction (hashable; strings become enums)."""

    task_type: TaskType = attrs.field(converter=_task_type)
    model: str = attrs.field(validator=attrs.validators.instance_of(str))
    provider: Provider = attrs.field(converter=_provider)
    complexity: Complexity = attrs.field(converter=_complexity)

    def to_dict(self) -> dict[str, Any]:
        """The query as sent in ``POST /v1/predictions/batch``."""
        from ._wire.predictions import query_to_dict

        return query_to_dict(self)

    def to_json(self) -> str:
        """``to_dict()`` as compact JSON text."""
        from ._wire.predictions import query_to_json

        return query_to_json(self)


@attrs.frozen(kw_only=True)
class TokenDistribution:
    """Percentiles of a token count; ``.median`` is the usual read."""

    p10: int
    p25: int
    median: int
    p75: int
    p90: int


@attrs.frozen(kw_only=True)
class QualityPrediction:
    """Expected share of runs whose gates pass, and of runs that succeed."""

    gate_pass_rate: float
    success_rate: float


@attrs.frozen(kw_only=True)
class PredictionData:
    """The predicted distributions; cost and duration are mappings of percentile to int."""

    input_tokens: TokenDistribution
    output_tokens: TokenDistribution
    cost_usd_micros: Mapping[str, int]
    duration_ms: Mapping[str, int]
    correction_factors: Mapping[str, float]
    quality: QualityPrediction


@attrs.frozen(kw_only=True)
class PredictionMetadata:
    """How the prediction was made. ``confidence`` keeps unknown server strings as ``str``."""

    sample_size: int
    fallback_level: int
    confidence: Confidence | str
    last_updated: datetime | None = None
    dimensions_matched: Mapping[str, Any] | None = None
    fallback_note: str | None = None
    cache_hit: bool = False


@attrs.frozen(kw_only=True)
class PredictionResponse(_Serializable):
    """One answer of ``/v1/predictions/batch``; ``prediction`` is None for unknown combos."""

    prediction: PredictionData | None
    metadata: PredictionMetadata

    def to_dict(self) -> dict[str, Any]:
        """The answer as JSON-ready data, in the reply's shape (read back by the SDK as is)."""
        from ._wire.predictions import prediction_to_dict

        return prediction_to_dict(self)

    def to_json(self) -> str:
        """``to_dict()`` as compact JSON text."""
        from ._wire.predictions import prediction_to_json

        return prediction_to_json(self)
