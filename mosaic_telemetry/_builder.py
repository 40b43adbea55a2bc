"""``EventBuilder``: the fluent way to make a ``TaskCompletionEvent``.

Setters never raise; they record what they were given. ``build()`` turns strings into enums
and UUIDs, fills ``event_id`` and ``timestamp`` when unset, and raises one
``EventValidationError`` naming every missing or invalid field at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from ._enums import Complexity, Harness, Outcome, Provider, QualityGate, RepoSizeCategory, TaskType
from ._event_rules import EVENT_FIELDS, check_event_fields, coerce_event_fields
from ._exceptions import EventValidationError
from ._models import TaskCompletionEvent

__all__ = ["EventBuilder"]


class _Unset:
    """The default of a keyword setter argument that was not given."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()

_DEFAULTS: dict[str, Any] = {
    "retry_count": 0,
    "quality_gates_failed": (),
    "language": None,
    "repo_size_category": None,
}


class EventBuilder:
    """Collects the fields of one event; ``build()`` validates them all at once."""

    def __init__(
        self,
        instance_id: str | uuid.UUID,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._values: dict[str, Any] = {"instance_id": instance_id}
        self._clock = clock or (lambda: datetime.now(timezone.utc))

    def __repr__(self) -> str:
        return f"EventBuilder({len(self._values)} fields set)"

    def _set(self, **values: Any) -> EventBuilder:
        self._values.update({k: v for k, v in values.items() if v is not _UNSET})
        return self

    def task_type(self, value: TaskType | str) -> EventBuilder:
        """Set ``task_type``."""
        return self._set(task_type=value)

    def model(self, value: str) -> EventBuilder:
        """Set ``model`` (1..100 characters)."""
        return self._set(model=value)

    def provider(self, value: Provider | str) -> EventBuilder:
        """Set ``provider``."""
        return self._set(provider=value)

    def harness_type(self, value: Harness | str) -> EventBuilder:
        """Set ``harness``."""
        return self._set(harness=value)

    def complexity_level(self, value: Complexity | str) -> EventBuilder:
        """Set ``complexity``."""
        return self._set(complexity=value)

    def outcome_value(self, value: Outcome | str) -> EventBuilder:
        """Set ``outcome``."""
        return self._set(outcome=value)

    def duration_ms(self, value: int) -> EventBuilder:
        """Set ``task_duration_ms`` (0..86,400,000)."""
        return self._set(task_duration_ms=value)

    def tokens(
        self,
        *,
        estimated_in: int = _UNSET,
        estimated_out: int = _UNSET,
        actual_in: int = _UNSET,
        actual_out: int = _UNSET,
    ) -> EventBuilder:
        """Set the four token counts (each 0..10,000,000); omitted ones stay as they were."""
        return self._set(
            estimated_input_tokens=estimated_in,
            estimated_output_tokens=estimated_out,
            actual_input_tokens=actual_in,
            actual_output_tokens=actual_out,
        )

    def cost(self, *, estimated: int = _UNSET, actual: int = _UNSET) -> EventBuilder:
        """Set estimated and actual cost in micro-dollars (USD × 1,000,000; 0..100,000,000)."""
        return self._set(estimated_cost_usd_micros=estimated, actual_cost_usd_micros=actual)

    def quality(
        self,
        *,
        passed: bool = _UNSET,
        gates_run: Iterable[QualityGate | str] = _UNSET,
        gates_failed: Iterable[QualityGate | str] = _UNSET,
    ) -> EventBuilder:
        """Set whether the quality gates passed, which ran and which failed (failed ⊆ run)."""
        return self._set(
            quality_gate_passed=passed,
            quality_gates_run=gates_run,
            quality_gates_failed=gates_failed,
        )

    def context(
        self, *, compactions: int = _UNSET, rotations: int = _UNSET, utilization: float = _UNSET
    ) -> EventBuilder:
        """Set context compactions and rotations (0..100) and final utilization (0.0..1.0)."""
        return self._set(
            context_compactions=compactions,
            context_rotations=rotations,
            context_utilization_final=utilization,
        )

    def retry_count(self, value: int) -> EventBuilder:
        """Set ``retry_count`` (0..20; default 0)."""
        return self._set(retry_count=value)

    def language(self, value: str | None) -> EventBuilder:
        """Set ``language`` (at most 30 characters, or None)."""
        return self._set(language=value)

    def repo_size(self, value: RepoSizeCategory | str | None) -> EventBuilder:
        """Set ``repo_size_category`` (or None)."""
        return self._set(repo_size_category=value)

    def event_id(self, value: str | uuid.UUID) -> EventBuilder:
        """Set ``event_id`` (default: a new uuid4 at build time)."""
        return self._set(event_id=value)

    def timestamp(self, value: datetime) -> EventBuilder:
        """Set ``timestamp`` (timezone-aware; default: now, UTC, at build time)."""
        return self._set(timestamp=value)

    def build(self) -> TaskCompletionEvent:
        """Return the event, or raise EventValidationError naming every bad or missing field."""
        values = {**_DEFAULTS, **self._values}
        if "event_id" not in values:
            values["event_id"] = uuid.uuid4()
        if "timestamp" not in values:
            values["timestamp"] = self._clock()
        problems = coerce_event_fields(values)
        if problems or len(values) < len(EVENT_FIELDS):  # the setters set wire fields only
            unreadable = {p.split(":", 1)[0] for p in problems}
            problems += check_event_fields(values)
            problems += [
                f"{name}: required (not set)"
                for name in EVENT_FIELDS
                if name not in values and name not in unreadable
            ]
            raise _in_field_order(problems)
        try:
            return TaskCompletionEvent(**values)  # which validates itself, once
        except EventValidationError as exc:
            raise _in_field_order(exc.problems) from None


def _in_field_order(problems: Iterable[str]) -> EventValidationError:
    """One error listing ``problems`` in wire field order (stable for one field's several)."""
    order = {name: i for i, name in enumerate(EVENT_FIELDS)}
    return EventValidationError(
        sorted(problems, key=lambda p: order.get(p.split(":", 1)[0], len(order)))
    )
