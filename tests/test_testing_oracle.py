"""Tests of mosaic_telemetry.testing.oracle: the test kit's own reading of wire-v1 §1, §3, §4."""

from __future__ import annotations

import ast
import uuid
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry import _enums
from mosaic_telemetry._event_rules import EVENT_FIELDS
from mosaic_telemetry.testing import oracle

from .fake_wire import KEY, OTHER_KEY, now_text, valid_event

PACKAGE = Path(oracle.__file__).resolve().parent


def test_oracle_imports_nothing_from_the_sdk() -> None:
    """oracle.py imports no SDK module at all, so it cannot share an SDK bug by construction."""
    tree = ast.parse((PACKAGE / "oracle.py").read_text())
    imported = [
        (node.level, node.module)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module != "__future__"
    ]
    imported += [
        (0, alias.name) for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names
    ]

    assert [m for level, m in imported if level > 0 or (m or "").startswith("mosaic")] == []


def test_schema_tables_match_the_sdk() -> None:
    """The hand-written schema (wire-v1 §3/§4) has the SDK's enums and field order."""
    assert tuple(oracle.EVENT_RULES) == EVENT_FIELDS
    pairs: list[tuple[frozenset[str], type[Enum]]] = [
        (oracle.TASK_TYPES, _enums.TaskType),
        (oracle.COMPLEXITIES, _enums.Complexity),
        (oracle.HARNESSES, _enums.Harness),
        (oracle.PROVIDERS, _enums.Provider),
        (oracle.QUALITY_GATES, _enums.QualityGate),
        (oracle.OUTCOMES, _enums.Outcome),
        (oracle.REPO_SIZES, _enums.RepoSizeCategory),
        (oracle.CONFIDENCES, _enums.Confidence),
    ]
    for wire_strings, enum in pairs:
        assert wire_strings == {member.value for member in enum}, enum.__name__


def test_valid_event_has_no_problems() -> None:
    """A complete event within every bound is valid, with or without its nullable values."""
    assert oracle.event_problems(valid_event()) == []
    assert oracle.event_problems(valid_event(language=None, repo_size_category=None)) == []


INVALID_CASES: list[tuple[str, dict[str, Any]]] = [
    ("instance_id", {"instance_id": "not-a-uuid"}),
    ("event_id", {"event_id": uuid.uuid4().hex}),  # no hyphens: not the canonical form
    ("event_id", {"event_id": ["not", "hashable"]}),
    ("timestamp", {"timestamp": "2024-01-01T00:00:00"}),  # no time zone
    ("timestamp", {"timestamp": now_text(timedelta(hours=2))}),  # too far in the future
    ("timestamp", {"timestamp": "2024-01-01T00:00:00+24:00"}),
    ("timestamp", {"timestamp": "2024-02-30T00:00:00Z"}),
    ("timestamp", {"timestamp": "2024-05-01T24:00:00Z"}),
    ("timestamp", {"timestamp": "2024-05-01T12:60:00Z"}),
    ("timestamp", {"timestamp": "2024-05-01 12:00:00Z"}),  # fromisoformat would take a space
    ("timestamp", {"timestamp": 1700000000}),
    ("task_duration_ms", {"task_duration_ms": 86_400_001}),
    ("task_duration_ms", {"task_duration_ms": 12.0}),
    ("task_type", {"task_type": "TESTING"}),
    ("task_type", {"task_type": ["testing"]}),  # unhashable: still a clear verdict
    ("complexity", {"complexity": "extreme"}),
    ("harness", {"harness": None}),
    ("model", {"model": ""}),
    ("model", {"model": "m" * 101}),
    ("provider", {"provider": "aws"}),
    ("estimated_input_tokens", {"estimated_input_tokens": True}),  # bools are not ints
    ("actual_output_tokens", {"actual_output_tokens": -1}),
    ("actual_cost_usd_micros", {"actual_cost_usd_micros": 100_000_001}),
    ("quality_gate_passed", {"quality_gate_passed": 1}),
    ("quality_gates_run", {"quality_gates_run": ["build", "build"]}),
    ("quality_gates_run", {"quality_gates_run": ["compile"]}),
    ("quality_gates_run", {"quality_gates_run": "build"}),
    ("quality_gates_run", {"quality_gates_run": [["build"]]}),  # unhashable item
    ("quality_gates_run", {"quality_gates_run": [1]}),
    ("quality_gates_failed", {"quality_gates_run": ["build"], "quality_gates_failed": ["lint"]}),
    ("context_compactions", {"context_compactions": 101}),
    ("context_utilization_final", {"context_utilization_final": 1.5}),
    ("context_utilization_final", {"context_utilization_final": float("nan")}),
    ("context_utilization_final", {"context_utilization_final": False}),
    ("outcome", {"outcome": "crashed"}),
    ("retry_count", {"retry_count": 21}),
    ("language", {"language": "x" * 31}),
    ("repo_size_category", {"repo_size_category": "gigantic"}),
    ("surprise", {"surprise": 1}),  # no extra keys
]


@pytest.mark.parametrize(("field", "overrides"), INVALID_CASES)
def test_each_rule_names_its_field(field: str, overrides: dict[str, Any]) -> None:
    """Each violation of wire-v1 §3 is reported once, naming exactly the field."""
    problems = oracle.event_problems(valid_event(**overrides))

    assert [name for name, _ in problems] == [field]


def test_missing_keys_and_non_objects_are_named() -> None:
    """Every key is required; an event that is not an object is one whole-event problem."""
    event = valid_event()
    del event["retry_count"], event["model"]

    assert oracle.event_problems(event) == [
        ("model", "field required"),
        ("retry_count", "field required"),
    ]
    assert oracle.event_problems(["not", "an", "object"]) == [
        (None, "event must be a JSON object, got array")
    ]


def test_extra_key_is_found_beside_other_problems() -> None:
    """An extra key is named even when another field is also wrong."""
    problems = oracle.event_problems(valid_event(retry_count=-1, extra=True))

    assert [name for name, _ in problems] == ["retry_count", "extra"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        (
            "2024-05-01T12:00:00.5+02:00",
            datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=timezone(timedelta(hours=2))),
        ),
        (
            "2024-05-01T12:00:00.123456789-05:30",
            datetime(
                2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone(-timedelta(hours=5, minutes=30))
            ),
        ),
    ],
)
def test_parse_timestamp_reads_zones_and_fractions(
    text: str, expected: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timestamps with Z or a numeric offset, with or without a fraction, are read exactly, by
    the fast path and by the path Python 3.10 takes (its fromisoformat reads no "Z")."""
    assert oracle.parse_timestamp(text) == expected

    class Python310(datetime):
        @classmethod
        def fromisoformat(cls, date_string: str) -> Python310:
            raise ValueError("Invalid isoformat string")

    monkeypatch.setattr(oracle, "datetime", Python310)
    assert oracle.parse_timestamp(text) == expected


def test_the_future_bound_uses_the_given_clock() -> None:
    """ "At most 1 h ahead" is judged against the ``now`` given, not the wall clock."""
    event = valid_event(timestamp="2024-01-01T12:00:00Z")
    utc = timezone.utc

    assert oracle.event_problems(event, now=datetime(2024, 1, 1, 11, 0, 1, tzinfo=utc)) == []
    late = oracle.event_problems(event, now=datetime(2024, 1, 1, 10, 59, 59, tzinfo=utc))
    assert [name for name, _ in late] == ["timestamp"]
    assert "1 h in the future" in late[0][1]


def test_timestamp_within_the_hour_ahead_is_valid() -> None:
    """A timestamp 30 minutes ahead (clock skew) is accepted; the bound is one hour."""
    assert oracle.event_problems(valid_event(timestamp=now_text(timedelta(minutes=30)))) == []


# --- authorization and envelope -------------------------------------------------------------------
@pytest.mark.parametrize(
    "header",
    [None, "", f"Basic {KEY}", f"bearer {KEY}", "Bearer short", f"Bearer {KEY}0", f"Bearer {KEY} "],
)
def test_malformed_authorization_is_401(header: str | None) -> None:
    """Anything but ``Bearer <64 hex>`` is a 401 with a detail and WWW-Authenticate."""
    reply = oracle.check_authorization(header, None)

    assert reply is not None
    assert reply.status == 401
    assert reply.headers == {"WWW-Authenticate": "Bearer"}
    assert isinstance(reply.body["detail"], str)


def test_authorization_with_and_without_an_expected_key() -> None:
    """Without an expected key any well-formed key passes; with one, another key is a 403."""
    assert oracle.check_authorization(f"Bearer {KEY}", None) is None
    assert oracle.check_authorization(f"Bearer {KEY}", KEY) is None
    denied = oracle.check_authorization(f"Bearer {OTHER_KEY}", KEY)
    assert denied is not None and denied.status == 403


@pytest.mark.parametrize(
    ("ok_json", "payload"),
    [
        (False, None),
        (True, {"evts": []}),
        (True, {"events": {}}),
        (True, []),
        (True, {"events": []}),
        (True, {"events": [{}] * 101}),
    ],
    ids=["not-json", "no-events", "events-not-list", "not-object", "empty", "101"],
)
def test_unreadable_envelope_is_400(ok_json: bool, payload: Any) -> None:
    """Bad JSON, no events list, or a batch outside 1..100 is a 400 with a text detail."""
    reply = oracle.batch_events(ok_json, payload)

    assert isinstance(reply, oracle.Reply)
    assert reply.status == 400
    assert isinstance(reply.body["detail"], str)


def test_envelope_of_100_events_is_read() -> None:
    """A batch of exactly 100 events is within the limit."""
    events = [valid_event() for _ in range(100)]

    assert oracle.batch_events(True, {"events": events}) == events


def test_received_ids_counts_every_string_id() -> None:
    """Every string event_id is received, valid or not; other shapes are skipped."""
    payload = {"events": [{"event_id": "x"}, {"event_id": 5}, "junk", {"event_id": "x"}]}

    assert oracle.received_ids(payload) == ["x", "x"]
    assert oracle.received_ids({"events": "nope"}) == []
    assert oracle.received_ids(None) == []


# --- verdicts -------------------------------------------------------------------------------------
def judge(events: list[Any], stored: set[str], **options: bool) -> oracle.Judgement:
    """The oracle's judgement of ``events`` given the stored keys."""
    problems = [oracle.event_problems(event) for event in events]
    return oracle.judge(events, problems, stored, **options)


def test_verdicts_accept_new_events_and_count() -> None:
    """New valid events are accepted, in order, with counts; they are what would be stored."""
    events = [valid_event(), valid_event()]

    judgement = judge(events, set())

    assert judgement.reply.status == 202
    assert judgement.reply.body == {
        "accepted": 2,
        "rejected": 0,
        "results": [
            {"event_id": e["event_id"], "status": "accepted", "error": None} for e in events
        ],
    }
    assert judgement.new == [(e["event_id"], e) for e in events]


def test_duplicates_are_found_in_the_store_and_in_the_batch_ignoring_case() -> None:
    """An id already stored, or repeated in the batch in any case, is a duplicate, stored once."""
    old, new = valid_event(), valid_event()
    repeat = {**new, "event_id": new["event_id"].upper()}

    judgement = judge([old, new, repeat], {old["event_id"].lower()})

    assert [r["status"] for r in judgement.reply.body["results"]] == [
        "duplicate",
        "accepted",
        "duplicate",
    ]
    assert judgement.reply.body["accepted"] == 1
    assert judgement.new == [(new["event_id"].lower(), new)]


def test_invalid_event_is_rejected_with_its_problems() -> None:
    """An invalid event is "rejected" with every problem named; the rest is judged as usual."""
    good, bad = valid_event(), valid_event(model="", retry_count=99)

    judgement = judge([good, bad], set())

    body = judgement.reply.body
    assert (body["accepted"], body["rejected"]) == (1, 1)
    error = body["results"][1]["error"]
    assert error.startswith("model: ") and "; retry_count: " in error
    assert [key for key, _ in judgement.new] == [good["event_id"]]
    assert [item["loc"] for item in judgement.reply.invalid] == [
        ["body", "events", 1, "model"],
        ["body", "events", 1, "retry_count"],
    ]


def test_refuse_invalid_is_a_422_naming_the_index_and_storing_nothing() -> None:
    """With refuse_invalid one bad event refuses the batch FastAPI style; nothing is new."""
    events = [valid_event(), valid_event(), valid_event(retry_count=99)]

    judgement = judge(events, set(), refuse_invalid=True)

    assert judgement.reply.status == 422
    detail = judgement.reply.body["detail"]
    assert [item["loc"] for item in detail] == [["body", "events", 2, "retry_count"]]
    assert detail[0]["type"] == "value_error"
    assert "0..20" in detail[0]["msg"]
    assert judgement.new == []
    assert judge(events[:2], set(), refuse_invalid=True).reply.status == 202


def test_event_that_is_not_an_object_is_rejected_without_an_id() -> None:
    """A non-object in the list is rejected with an empty event_id and a whole-event location."""
    judgement = judge(["junk", valid_event()], set())

    first = judgement.reply.body["results"][0]
    assert (first["event_id"], first["status"]) == ("", "rejected")
    assert judgement.reply.invalid[0]["loc"] == ["body", "events", 0]


def test_empty_verdicts_per_path() -> None:
    """A body with no verdicts has the shape of its endpoint's reply."""
    assert oracle.empty_verdicts(oracle.EVENTS_PATH) == {
        "accepted": 0,
        "rejected": 0,
        "results": [],
    }
    assert oracle.empty_verdicts(oracle.PREDICTIONS_PATH) == {"results": []}
