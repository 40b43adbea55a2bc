"""Builders of valid events and configs shared by the tests."""

from __future__ import annotations

import uuid
from typing import Any

from mosaic_telemetry import EventBuilder, TaskCompletionEvent
from mosaic_telemetry.testing import example_event_builder

#: A seeded prediction reply (wire-v1 §2) shared by the prediction and CLI tests.
ANSWER: dict[str, Any] = {
    "prediction": {
        "input_tokens": {
            "p10": 50000,
            "p25": 80000,
            "median": 110000,
            "p75": 140000,
            "p90": 190000,
        },
        "output_tokens": {"p10": 9000, "p25": 20000, "median": 38000, "p75": 50000, "p90": 70000},
        "cost_usd_micros": {"median": 910000, "p90": 1500000},
        "duration_ms": {"median": 45000},
        "correction_factors": {"input": 1.07, "output": 0.86},
        "quality": {"gate_pass_rate": 0.91, "success_rate": 0.88},
    },
    "metadata": {
        "sample_size": 1200,
        "fallback_level": 0,
        "confidence": "high",
        "last_updated": "2026-11-20T10:00:00Z",
        "dimensions_matched": {"task_type": True, "model": True},
        "fallback_note": None,
        "cache_hit": False,
    },
}

API_KEY = "ab" * 32
INSTANCE_ID = "12345678-1234-4234-8234-123456789abc"


def full_builder(instance_id: str = INSTANCE_ID) -> EventBuilder:
    """A builder with every required field set, as in the upstream quick start."""
    return example_event_builder(instance_id)


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
