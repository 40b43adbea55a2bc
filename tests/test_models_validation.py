"""The event validates itself once: the generated fast check and the detailed rules agree."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from enum import Enum
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
from mosaic_telemetry._event_rules import EVENT_FIELDS, check_event_fields, well_formed

from .helpers import make_event

ENUMS: list[type[Enum]] = [
    TaskType,
    Complexity,
    Harness,
    Provider,
    Outcome,
    QualityGate,
    RepoSizeCategory,
]


class _UUIDSubclass(uuid.UUID):
    """A UUID of another type: valid, though the fast check does not know it."""


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from(
        [b + d for b in (0, 20, 100, 86_400_000, 10_000_000, 100_000_000) for d in (-1, 0, 1)]
    ),
    st.floats(),
    st.floats(min_value=0.0, max_value=1.0),
    st.text(max_size=35),
    st.text(min_size=95, max_size=105),
    st.sampled_from(["", "\ud800", "a\udfff", "é" * 30, "é" * 31, "x" * 100, "x" * 101]),
    st.sampled_from([m for enum in ENUMS for m in enum]),
    st.sampled_from([m.value for enum in ENUMS for m in enum]),
    st.uuids(),
    st.uuids().map(lambda u: _UUIDSubclass(int=u.int)),
    st.datetimes(timezones=st.sampled_from([None, timezone.utc, timezone(timedelta(hours=5))])),
    st.just(datetime.now(timezone.utc) + timedelta(minutes=59)),
    st.just(datetime.now(timezone.utc) + timedelta(minutes=61)),
)
gates = st.lists(st.sampled_from(list(QualityGate)), max_size=4).map(tuple)
values = st.one_of(scalars, gates, st.lists(scalars, max_size=3).map(tuple))


def _agrees(changes: dict[str, Any]) -> None:
    fields = {**attrs.asdict(make_event(), recurse=False), **changes}
    expected = check_event_fields(fields)
    if expected:
        with pytest.raises(EventValidationError) as info:
            TaskCompletionEvent(**fields)
        assert list(info.value.problems) == expected
    else:
        event = TaskCompletionEvent(**fields)
        assert attrs.asdict(event, recurse=False) == fields


@pytest.mark.parametrize("field", EVENT_FIELDS)
@settings(max_examples=150, deadline=None)
@given(value=values)
def test_each_field_is_accepted_and_named_exactly_as_the_rules_say(field: str, value: Any) -> None:
    """For any value of one field, the event is built iff the rules find no problem, and the
    error lists exactly the rules' problems: the fast check never accepts what they reject."""
    _agrees({field: value})


@settings(max_examples=500, deadline=None)
@given(changes=st.dictionaries(st.sampled_from(EVENT_FIELDS), values, min_size=2, max_size=5))
def test_several_bad_fields_are_all_named(changes: dict[str, Any]) -> None:
    """With several fields changed at once, the error names exactly the rules' problems."""
    _agrees(changes)


def test_a_usual_event_takes_the_fast_path() -> None:
    """An event of exact types in UTC with ASCII text passes the generated check alone."""
    assert well_formed(make_event()) is True


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", _UUIDSubclass(int=5)),
        ("timestamp", datetime.now(timezone(timedelta(hours=-7)))),
        ("model", "modèle-é"),
        ("language", "日本語"),
    ],
)
def test_valid_values_the_fast_check_cannot_tell_are_accepted(field: str, value: object) -> None:
    """A value outside the fast check's exact types is still judged by the rules, not refused."""
    fields = {**attrs.asdict(make_event(), recurse=False), field: value}
    event = TaskCompletionEvent(**fields)
    assert well_formed(event) is False
    assert getattr(event, field) == value
