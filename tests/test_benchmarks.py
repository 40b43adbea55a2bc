"""The benchmark runner runs, and the fast paths it drove keep their exact behaviour."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from mosaic_telemetry import (
    Complexity,
    Harness,
    Outcome,
    Provider,
    QualityGate,
    RepoSizeCategory,
    TaskType,
)
from mosaic_telemetry._models import TaskCompletionEvent
from mosaic_telemetry._wire.convert import format_timestamp
from mosaic_telemetry._wire.events import event_to_dict, event_to_json

from .helpers import make_event

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_quick_run_prints_the_table_and_exits_0() -> None:
    """`python benchmarks/run.py --quick` finishes, exits 0 and prints every figure's row."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOSAIC_TELEMETRY_")}
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "| figure | ours | baseline / peer | ratio | target | result |" in out
    for figure in ("| 1. track()", "| 2. track()", "| 3. delivery", "| 4. track()", "| 5. "):
        assert figure in out, figure
    assert "ERROR" not in out
    assert "- command: `python benchmarks/run.py --quick`" in out


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
    assert expected == event_to_json(event)


def test_timestamps_are_utc_with_microseconds_and_z() -> None:
    """Any aware datetime is written in UTC, with 6 fraction digits and a Z."""
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(moment) == "2026-01-02T01:04:05.000000Z"
    assert json.loads(event_to_json(make_event()))["timestamp"].endswith("Z")
