"""The plain values and rules of a task: its kind, and what its end decides.

``TaskSpec`` is what is known when a task starts; the functions decide the duration, the
outcome and the estimates when it ends. Kept apart from the recorder (``_task.py``) so each
rule is tested without a client, a clock or a server, and shared with ``mosaic-telemetry
track``.
"""

from __future__ import annotations

import builtins
import math
import sys

import attrs

from ._enums import Complexity, Harness, Outcome, Provider, RepoSizeCategory, TaskType
from ._event_rules import MAX_COST_MICROS, MAX_DURATION_MS, MAX_TOKENS
from ._models import PredictionQuery, PredictionResponse

__all__ = [
    "CONTEXT_DEFAULTS",
    "ESTIMATE_FIELDS",
    "TaskSpec",
    "duration_ms",
    "medians",
    "outcome_for",
]

#: What an event carries for context nobody reported: the schema has no null for these, so
#: 0, 0, 0.0 means "not reported" (docs/agents.md).
CONTEXT_DEFAULTS: dict[str, int | float] = {
    "context_compactions": 0,
    "context_rotations": 0,
    "context_utilization_final": 0.0,
}
#: The estimate fields; 0 in one of them means "no estimate was available".
ESTIMATE_FIELDS = ("estimated_input_tokens", "estimated_output_tokens", "estimated_cost_usd_micros")


@attrs.frozen(kw_only=True)
class TaskSpec:
    """What is known when a task starts; strings are read by ``build()`` like the builder's."""

    task_type: TaskType | str
    model: str
    provider: Provider | str
    harness: Harness | str
    complexity: Complexity | str
    language: str | None = None
    repo_size: RepoSizeCategory | str | None = None

    def query(self) -> PredictionQuery | None:
        """The prediction query of this task, or None when a value cannot be one."""
        try:
            return PredictionQuery(
                task_type=self.task_type,
                model=self.model,
                provider=self.provider,
                complexity=self.complexity,
            )
        except (TypeError, ValueError):
            return None  # build() names the bad field when the block ends


def duration_ms(started: float, ended: float) -> int:
    """Milliseconds between two monotonic readings, within the schema's 0..24 h.

    A clock that steps back (an injected one may) gives 0; a task longer than 24 h is sent as
    24 h rather than not at all.
    """
    elapsed = (ended - started) * 1000.0
    if math.isnan(elapsed):
        return 0
    return round(min(max(elapsed, 0.0), float(MAX_DURATION_MS)))


def medians(prediction: PredictionResponse | None) -> dict[str, int]:
    """The estimate fields (by event field name) a prediction's medians give.

    Values are clamped to the schema's bounds, so a server's odd median never makes the task's
    event invalid; a prediction without data gives nothing.
    """
    data = prediction.prediction if prediction is not None else None
    if data is None:
        return {}
    raw = {
        "estimated_input_tokens": (data.input_tokens.median, MAX_TOKENS),
        "estimated_output_tokens": (data.output_tokens.median, MAX_TOKENS),
        "estimated_cost_usd_micros": (data.cost_usd_micros.get("median"), MAX_COST_MICROS),
    }
    found = {}
    for name, (value, cap) in raw.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found[name] = max(0, min(round(value), cap))
    return found


def _timeout_types() -> tuple[type[BaseException], ...]:
    # Before 3.11 asyncio and concurrent.futures have TimeoutErrors of their own. Importing
    # them here would slow `import mosaic_telemetry`; a module nobody imported raised nothing.
    kinds: list[type[BaseException]] = [TimeoutError]
    for module in ("asyncio", "concurrent.futures"):
        kind = getattr(sys.modules.get(module), "TimeoutError", None)
        if isinstance(kind, type) and issubclass(kind, BaseException):
            kinds.append(kind)
    return tuple(kinds)


def outcome_for(exc: BaseException | None) -> Outcome:
    """Success without an exception (or on ``SystemExit(0)``), timeout on one, else failure.

    An exception group is a timeout when every exception in it is one.
    """
    if exc is None or (isinstance(exc, SystemExit) and exc.code in (None, 0)):
        return Outcome.SUCCESS
    kinds = _timeout_types()
    if isinstance(exc, kinds):
        return Outcome.TIMEOUT
    group = getattr(builtins, "BaseExceptionGroup", None)
    if group is not None and isinstance(exc, group):
        _timeouts, rest = exc.split(lambda e: isinstance(e, kinds))
        if rest is None:
            return Outcome.TIMEOUT
    return Outcome.FAILURE
