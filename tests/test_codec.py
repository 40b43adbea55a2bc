"""The codec: exact wire JSON of events, batch bodies, and lenient reading of replies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mosaic_telemetry import EventValidationError
from mosaic_telemetry._codec import (
    batch_body,
    event_from_dict,
    event_to_dict,
    event_to_json,
    parse_batch_results,
    parse_invalid_indices,
    prediction_from_dict,
    prediction_to_dict,
)
from mosaic_telemetry._models import EVENT_FIELDS

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


def test_batch_results_are_read_leniently() -> None:
    """Verdicts are read per event; junk entries are skipped; no results means None."""
    payload = {
        "accepted": 1,
        "results": [
            {"event_id": "a", "status": "accepted", "error": None},
            {"event_id": "b", "status": "rejected", "error": "bad model"},
            {"event_id": "c", "status": "weird"},
            "junk",
        ],
    }
    assert parse_batch_results(payload) == {"a": ("accepted", None), "b": ("rejected", "bad model")}
    assert parse_batch_results({"accepted": 3}) is None
    assert parse_batch_results("not json") is None


def test_invalid_indices_from_fastapi_422() -> None:
    """A 422 detail names batch indices; out-of-range or non-event locations are ignored."""
    payload = {
        "detail": [
            {"loc": ["body", "events", 2, "model"], "msg": "too long", "type": "value_error"},
            {"loc": ["body", "events", 9, "model"], "msg": "out of range"},
            {"loc": ["body"], "msg": "whatever"},
        ]
    }
    assert parse_invalid_indices(payload, 3) == {2: "model: too long"}
    assert parse_invalid_indices({"detail": "text"}, 3) == {}


PREDICTION = {
    "prediction": {
        "input_tokens": {"p10": 1, "p25": 2, "median": 3, "p75": 4, "p90": 5, "p99": 9},
        "output_tokens": {"p10": 1, "p25": 2, "median": 3, "p75": 4, "p90": 5},
        "cost_usd_micros": {"median": 700, "p90": 900},
        "duration_ms": {"median": 1000},
        "correction_factors": {"input": 1.1, "output": 1},
        "quality": {"gate_pass_rate": 0.9, "success_rate": 0.8},
        "new_key": [1, 2],
    },
    "metadata": {
        "sample_size": 40,
        "fallback_level": 1,
        "confidence": "stellar",
        "last_updated": "2026-11-01T00:00:00Z",
        "dimensions_matched": {"model": True},
        "fallback_note": None,
        "cache_hit": True,
        "extra": "x",
    },
}


def test_prediction_read_leniently() -> None:
    """Unknown keys are ignored and an unknown confidence is kept as text."""
    response = prediction_from_dict(PREDICTION)
    assert response.prediction is not None
    assert response.prediction.input_tokens.median == 3
    assert response.prediction.cost_usd_micros["median"] == 700
    assert response.prediction.quality.gate_pass_rate == 0.9
    assert response.metadata.confidence == "stellar"
    assert response.metadata.last_updated is not None
    assert prediction_from_dict(prediction_to_dict(response)) == response


def test_prediction_wrong_type_names_the_field() -> None:
    """A wrong type in a known field is a ValueError naming the field."""
    bad = json.loads(json.dumps(PREDICTION))
    bad["metadata"]["sample_size"] = "many"
    with pytest.raises(ValueError, match="sample_size"):
        prediction_from_dict(bad)
