"""EventBuilder: fluent setters, defaults, and one error naming every bad field."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from mosaic_telemetry import (
    EventBuilder,
    EventValidationError,
    QualityGate,
    RepoSizeCategory,
    TaskType,
)

from .helpers import INSTANCE_ID, full_builder


def test_quick_start_builds_with_defaults() -> None:
    """The upstream quick-start chain builds, filling event_id, timestamp and defaults."""
    before = datetime.now(timezone.utc)
    event = full_builder().build()
    assert event.instance_id == uuid.UUID(INSTANCE_ID)
    assert event.event_id.version == 4
    assert before <= event.timestamp <= datetime.now(timezone.utc)
    assert (event.retry_count, event.quality_gates_failed) == (0, ())
    assert (event.repo_size_category, event.language) == (None, "typescript")


def test_each_build_gets_a_new_event_id() -> None:
    """Two builds of one builder are two events, not one."""
    builder = full_builder()
    assert builder.build().event_id != builder.build().event_id


def test_strings_are_read_as_enums_and_uuids() -> None:
    """Wire strings are accepted for enums, gates and ids."""
    event_id = str(uuid.uuid4())
    event = (
        full_builder()
        .task_type("testing")
        .quality(passed=False, gates_run=["build", "test"], gates_failed=["test"])
        .repo_size("large")
        .event_id(event_id)
        .context(compactions=0, rotations=0, utilization=1)
        .build()
    )
    assert event.task_type is TaskType.TESTING
    assert event.quality_gates_failed == (QualityGate.TEST,)
    assert event.repo_size_category is RepoSizeCategory.LARGE
    assert str(event.event_id) == event_id
    assert event.context_utilization_final == 1.0


def test_every_problem_is_named_at_once() -> None:
    """build() raises one EventValidationError listing every missing and invalid field."""
    with pytest.raises(EventValidationError) as info:
        EventBuilder(instance_id="not-a-uuid").duration_ms(-5).model("").task_type("nope").build()
    fields = {p.split(":", 1)[0] for p in info.value.problems}
    assert {
        "instance_id",
        "task_duration_ms",
        "model",
        "task_type",
        "complexity",
        "outcome",
    } <= fields
    assert "task_type: cannot read 'nope'" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("setter", "kwargs", "field"),
    [
        ("tokens", {"actual_in": 10_000_001}, "actual_input_tokens"),
        ("tokens", {"estimated_out": True}, "estimated_output_tokens"),
        ("cost", {"actual": 100_000_001}, "actual_cost_usd_micros"),
        ("cost", {"estimated": -1}, "estimated_cost_usd_micros"),
        ("context", {"utilization": 1.5}, "context_utilization_final"),
        ("context", {"compactions": 101}, "context_compactions"),
        ("context", {"rotations": 2.0}, "context_rotations"),
        ("quality", {"gates_run": ["build", "build"]}, "quality_gates_run"),
        ("quality", {"passed": 1}, "quality_gate_passed"),
    ],
)
def test_bounds_and_types_are_enforced(setter: str, kwargs: dict[str, object], field: str) -> None:
    """Each wire-v1 §3 rule rejects its bad value and names its field."""
    with pytest.raises(EventValidationError) as info:
        getattr(full_builder(), setter)(**kwargs).build()
    assert [p.split(":", 1)[0] for p in info.value.problems] == [field]


def test_failed_gates_must_have_run() -> None:
    """quality_gates_failed must be a subset of quality_gates_run."""
    with pytest.raises(EventValidationError, match="subset"):
        full_builder().quality(passed=False, gates_run=["build"], gates_failed=["lint"]).build()


def test_scalar_rules() -> None:
    """Duration, retry count, language length and future timestamps are bounded."""
    future = datetime.now(timezone.utc) + timedelta(hours=2)
    naive = datetime.now()
    cases = {
        "task_duration_ms": full_builder().duration_ms(86_400_001),
        "retry_count": full_builder().retry_count(21),
        "language": full_builder().language("x" * 31),
        "model": full_builder().model("m" * 101),
    }
    for field, builder in cases.items():
        with pytest.raises(EventValidationError, match=field):
            builder.build()
    for stamp in (future, naive):
        with pytest.raises(EventValidationError, match="timestamp"):
            full_builder().timestamp(stamp).build()


def test_timestamp_from_injected_clock() -> None:
    """build() takes 'now' from the injected clock."""
    fixed = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    builder = EventBuilder(INSTANCE_ID, clock=lambda: fixed)
    assert full_builder().timestamp(fixed).build().timestamp == fixed
    assert builder._clock() == fixed
