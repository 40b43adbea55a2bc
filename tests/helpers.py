"""Builders of valid events and configs shared by the tests."""

from __future__ import annotations

import uuid
from typing import Any

from mosaic_telemetry import (
    Complexity,
    EventBuilder,
    Harness,
    Outcome,
    Provider,
    QualityGate,
    TaskCompletionEvent,
    TaskType,
)

API_KEY = "ab" * 32
INSTANCE_ID = "12345678-1234-4234-8234-123456789abc"


def full_builder(instance_id: str = INSTANCE_ID) -> EventBuilder:
    """A builder with every required field set, as in the upstream quick start."""
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


def make_event(**overrides: Any) -> TaskCompletionEvent:
    """A valid event with a fresh event_id."""
    builder = full_builder()
    for name, value in overrides.items():
        getattr(builder, name)(value)
    return builder.build()


def make_events(count: int) -> list[TaskCompletionEvent]:
    """``count`` valid events with distinct ids."""
    return [make_event() for _ in range(count)]


def new_id() -> str:
    """A fresh uuid4 text."""
    return str(uuid.uuid4())


def child_env() -> dict[str, str]:
    """The environment of a child Python process that imports this source tree."""
    import os
    from pathlib import Path

    root = str(Path(__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOSAIC_TELEMETRY_")}
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env
