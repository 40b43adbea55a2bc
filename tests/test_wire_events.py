"""Event JSON: the exact wire text of events and batch bodies, and reading dicts back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mosaic_telemetry import EventValidationError
from mosaic_telemetry._models import EVENT_FIELDS
from mosaic_telemetry._wire.events import batch_body, event_from_dict, event_to_dict, event_to_json

from .helpers import make_event

WIRE_KEYS = [
    "instance_id",
    "event_id",
    "timestamp",
    "task_duration_ms",
    "task_type",
    "complexity",
    "harness",
    "model",
    "provider",
    "estimated_input_tokens",
    "estimated_output_tokens",
    "actual_input_tokens",
    "actual_output_tokens",
    "estimated_cost_usd_micros",
    "actual_cost_usd_micros",
    "quality_gate_passed",
    "quality_gates_run",
    "quality_gates_failed",
    "context_compactions",
    "context_rotations",
    "context_utilization_final",
    "outcome",
    "retry_count",
    "language",
    "repo_size_category",
]


def test_event_json_has_exactly_the_wire_keys() -> None:
    """Every schema 1.0 key is sent, no other, with wire strings for enums and ids."""
    event = make_event()
    data = json.loads(event_to_json(event))
    assert list(data) == WIRE_KEYS == list(EVENT_FIELDS)
    assert data["task_type"] == "implementation"
    assert data["quality_gates_run"] == ["build", "lint", "test"]
    assert data["event_id"] == str(event.event_id)
    assert data["timestamp"].endswith("Z")
    assert data["repo_size_category"] is None
    assert data["quality_gate_passed"] is True


def test_event_round_trip() -> None:
    """event_from_dict reads back what event_to_dict wrote."""
    event = make_event()
    assert event_from_dict(event_to_dict(event)) == event


def test_event_from_dict_names_every_problem() -> None:
    """A raw dict with several faults gets one error naming each field."""
    data: dict[str, Any] = event_to_dict(make_event())
    data.update(task_type="nope", actual_input_tokens=True, extra=1)
    del data["outcome"]
    with pytest.raises(EventValidationError) as info:
        event_from_dict(data)
    fields = sorted(p.split(":", 1)[0] for p in info.value.problems)
    assert fields == ["actual_input_tokens", "extra", "outcome", "task_type"]


def test_batch_body_joins_stored_texts_verbatim() -> None:
    """The batch body embeds the stored JSON texts as they are."""
    texts = [event_to_json(make_event()) for _ in range(3)]
    body = batch_body(texts)
    assert json.loads(body) == {"events": [json.loads(t) for t in texts]}
    assert all(t.encode() in body for t in texts)
