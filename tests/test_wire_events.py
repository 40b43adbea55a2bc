"""Event JSON: the exact wire text of events and batch bodies, and reading dicts back."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic_telemetry import (
    Complexity,
    EventValidationError,
    Harness,
    Outcome,
    Provider,
    QualityGate,
    RepoSizeCategory,
    TaskCompletionEvent,
    TaskType,
)
from mosaic_telemetry._event_rules import EVENT_FIELDS
from mosaic_telemetry._wire.convert import format_timestamp
from mosaic_telemetry._wire.events import (
    batch_body,
    event_from_dict,
    event_id_and_json,
    event_to_dict,
    event_to_json,
)

from .helpers import full_builder, make_event

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


_gates = st.lists(st.sampled_from(list(QualityGate)), unique=True)
_text = st.text(max_size=30)


@st.composite
def events(draw: st.DrawFn) -> TaskCompletionEvent:
    """Valid events with every field drawn, unicode and escapes included."""
    run = draw(_gates)
    offset = timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60)))
    moment = draw(
        st.datetimes(
            min_value=datetime(1970, 1, 2), max_value=datetime(2025, 12, 31), timezones=st.none()
        )
    )
    return TaskCompletionEvent(
        instance_id=uuid.UUID(int=draw(st.integers(0, 2**128 - 1))),
        event_id=uuid.uuid4(),
        timestamp=moment.replace(tzinfo=timezone(offset)),
        task_duration_ms=draw(st.integers(0, 86_400_000)),
        task_type=draw(st.sampled_from(list(TaskType))),
        complexity=draw(st.sampled_from(list(Complexity))),
        harness=draw(st.sampled_from(list(Harness))),
        model=draw(st.text(min_size=1, max_size=100)),
        provider=draw(st.sampled_from(list(Provider))),
        estimated_input_tokens=draw(st.integers(0, 10_000_000)),
        estimated_output_tokens=draw(st.integers(0, 10_000_000)),
        actual_input_tokens=draw(st.integers(0, 10_000_000)),
        actual_output_tokens=draw(st.integers(0, 10_000_000)),
        estimated_cost_usd_micros=draw(st.integers(0, 100_000_000)),
        actual_cost_usd_micros=draw(st.integers(0, 100_000_000)),
        quality_gate_passed=draw(st.booleans()),
        quality_gates_run=run,
        quality_gates_failed=draw(st.sampled_from([[], run[:1], run])),
        context_compactions=draw(st.integers(0, 100)),
        context_rotations=draw(st.integers(0, 100)),
        context_utilization_final=draw(st.floats(0.0, 1.0)),
        outcome=draw(st.sampled_from(list(Outcome))),
        retry_count=draw(st.integers(0, 20)),
        language=draw(st.none() | _text),
        repo_size_category=draw(st.none() | st.sampled_from(list(RepoSizeCategory))),
    )


@settings(max_examples=300, deadline=None)
@given(event=events())
def test_fast_event_json_is_json_dumps_of_the_cattrs_dict(event: TaskCompletionEvent) -> None:
    """The generated writer of track() writes exactly json.dumps of the cattrs wire dict."""
    expected = json.dumps(event_to_dict(event), separators=(",", ":"), ensure_ascii=False)
    assert (str(event.event_id), expected) == event_id_and_json(event)


def test_instance_id_texts_follow_the_event() -> None:
    """Events of two instance ids in turn each carry their own instance id text."""
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    for instance in (first, second, first, second):
        event = full_builder(instance).build()
        assert json.loads(event_to_json(event))["instance_id"] == instance
        same = attrs.evolve(event, instance_id=uuid.UUID(instance))  # an equal, other object
        assert json.loads(event_to_json(same))["instance_id"] == instance


class _UUIDSubclass(uuid.UUID):
    """A UUID of another type, which the model accepts."""


def test_a_valid_event_of_unusual_types_is_written_as_defined() -> None:
    """A UUID subclass (valid, but not the writer's exact type) is written by json.dumps."""
    event = attrs.evolve(make_event(), event_id=_UUIDSubclass(int=7))
    expected = json.dumps(event_to_dict(event), separators=(",", ":"), ensure_ascii=False)
    assert (str(event.event_id), expected) == event_id_and_json(event)


def test_timestamps_are_utc_with_microseconds_and_z() -> None:
    """Any aware datetime is written in UTC, with 6 fraction digits (also when 0) and a Z."""
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(moment) == "2026-01-02T01:04:05.000000Z"
    assert format_timestamp(moment.replace(microsecond=7)) == "2026-01-02T01:04:05.000007Z"
    assert json.loads(event_to_json(make_event()))["timestamp"].endswith("Z")
