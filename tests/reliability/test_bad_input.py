"""Scenario 6: bad input. Hypothesis drives every builder setter, raw dicts fed to the codec,
arbitrary objects given to ``track()``, and fuzzed server replies over a real socket.

Proves: a build either yields an event that the test server's own (independent) validator
accepts, or raises ``EventValidationError`` naming the field; the codec likewise; ``track()``
never raises; and no server reply, however wrong, makes the worker fail or loses an event.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta, timezone
from email.utils import formatdate
from enum import Enum
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
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
    TelemetryClient,
    TelemetryConfig,
)
from mosaic_telemetry._event_rules import EVENT_FIELDS
from mosaic_telemetry._wire.events import event_from_dict, event_to_dict, event_to_json
from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply
from mosaic_telemetry.testing.oracle import event_problems

from ..helpers import full_builder, make_event, make_events
from .conftest import dead_ids, wait_until

Config = Callable[..., TelemetryConfig]
SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ENUMS: list[type[Enum]] = [
    TaskType,
    Complexity,
    Harness,
    Provider,
    Outcome,
    QualityGate,
    RepoSizeCategory,
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=40),
    st.text(min_size=25, max_size=140),
    st.sampled_from(["\x00", "é" * 31, "🙂" * 101]),  # lone surrogates: see below
    st.binary(max_size=8),
    st.sampled_from([m for enum in ENUMS for m in enum]),
    st.sampled_from([m.value for enum in ENUMS for m in enum]),
    st.uuids(),
    st.datetimes(timezones=st.sampled_from([None, timezone.utc, timezone(timedelta(hours=-7))])),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.builds(object))

#: (setter call, the wire field it sets)
SETTERS: list[tuple[Callable[[Any, Any], Any], str]] = [
    (lambda b, v: b.task_type(v), "task_type"),
    (lambda b, v: b.model(v), "model"),
    (lambda b, v: b.provider(v), "provider"),
    (lambda b, v: b.harness_type(v), "harness"),
    (lambda b, v: b.complexity_level(v), "complexity"),
    (lambda b, v: b.outcome_value(v), "outcome"),
    (lambda b, v: b.duration_ms(v), "task_duration_ms"),
    (lambda b, v: b.tokens(estimated_in=v), "estimated_input_tokens"),
    (lambda b, v: b.tokens(estimated_out=v), "estimated_output_tokens"),
    (lambda b, v: b.tokens(actual_in=v), "actual_input_tokens"),
    (lambda b, v: b.tokens(actual_out=v), "actual_output_tokens"),
    (lambda b, v: b.cost(estimated=v), "estimated_cost_usd_micros"),
    (lambda b, v: b.cost(actual=v), "actual_cost_usd_micros"),
    (lambda b, v: b.quality(passed=v), "quality_gate_passed"),
    (lambda b, v: b.quality(gates_run=v), "quality_gates_run"),
    (lambda b, v: b.quality(gates_failed=v), "quality_gates_failed"),
    (lambda b, v: b.context(compactions=v), "context_compactions"),
    (lambda b, v: b.context(rotations=v), "context_rotations"),
    (lambda b, v: b.context(utilization=v), "context_utilization_final"),
    (lambda b, v: b.retry_count(v), "retry_count"),
    (lambda b, v: b.language(v), "language"),
    (lambda b, v: b.repo_size(v), "repo_size_category"),
    (lambda b, v: b.event_id(v), "event_id"),
    (lambda b, v: b.timestamp(v), "timestamp"),
]


def _fields_named(error: EventValidationError) -> set[str]:
    return {problem.split(":", 1)[0] for problem in error.problems}


def _check_sendable(event: TaskCompletionEvent) -> None:
    """A built event serialises to UTF-8 JSON that the server's own validator accepts."""
    wire = json.loads(event_to_json(event).encode("utf-8"))
    assert event_problems(wire) == []
    assert event_from_dict(wire) == event


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(range(len(SETTERS))), values), min_size=1, max_size=4))
def test_every_builder_setter_yields_a_valid_event_or_names_the_field(
    calls: list[tuple[int, Any]],
) -> None:
    """Any values through any setters: a sendable event, or EventValidationError naming them."""
    builder = full_builder()
    touched = set()
    for index, value in calls:
        setter, field = SETTERS[index]
        setter(builder, value)
        touched.add(field)
    try:
        event = builder.build()
    except EventValidationError as exc:
        named = _fields_named(exc)
        if "quality_gates_run" in touched:  # failed ⊆ run is reported on the failed side
            touched.add("quality_gates_failed")
        assert named and named <= touched, (named, touched)
        return
    _check_sendable(event)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*EVENT_FIELDS, "unknown_key"]),
            st.sampled_from(["set", "delete"]),
            json_values,
        ),
        max_size=4,
    ),
    json_values,
)
def test_codec_reads_any_dict_into_an_event_or_names_the_field(
    edits: list[tuple[str, str, Any]], junk: Any
) -> None:
    """A wire dict with any keys set, removed or added: an event, or an error naming each key."""
    wire = event_to_dict(make_event())
    touched = set()
    for key, action, value in edits:
        touched.add(key)
        if action == "delete":
            wire.pop(key, None)
        else:
            wire[key] = value
    try:
        event = event_from_dict(wire)
    except EventValidationError as exc:
        named = _fields_named(exc)
        if "quality_gates_run" in touched:
            touched.add("quality_gates_failed")
        assert named and named <= touched, (named, touched)
    else:
        _check_sendable(event)
    with pytest.raises(EventValidationError):
        event_from_dict(junk) if not isinstance(junk, dict) else event_from_dict({**junk, "x": 1})


class _Evil:
    """Raises from every dunder Python might call while handling it."""

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    __hash__ = None  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(name)


@pytest.fixture
def quiet_client(make_config: Config) -> Iterator[TelemetryClient]:
    """A client (never started) whose error log lines are not shown."""
    client = TelemetryClient(make_config())
    yield client
    client.stop()


@SETTINGS
@given(
    st.one_of(
        values,
        st.builds(_Evil),
        st.just(mock.Mock(spec=TaskCompletionEvent)),
        st.just(mock.MagicMock()),
        st.just(TaskCompletionEvent),
    )
)
def test_track_of_anything_never_raises(quiet_client: TelemetryClient, thing: Any) -> None:
    """track() given anything at all does not raise and counts it as invalid."""
    before = quiet_client.stats()["invalid"]
    logging.disable(logging.CRITICAL)
    try:
        quiet_client.track(thing)
    finally:
        logging.disable(logging.NOTSET)
    assert quiet_client.stats()["invalid"] == before + 1


def test_builder_refuses_text_that_is_not_unicode() -> None:
    """A lone surrogate in model or language is refused by build(), naming both fields."""
    with pytest.raises(EventValidationError) as caught:
        full_builder().model("claude-\ud800").language("py\udfff").build()
    assert _fields_named(caught.value) == {"model", "language"}


def test_track_of_an_event_with_unencodable_text_never_raises(
    server: FakeTelemetryServer, make_config: Config
) -> None:
    """A lone surrogate forced past the validators (build() refuses it, see above): track()
    does not raise, counts the event invalid and sends nothing."""
    event = make_event()
    object.__setattr__(event, "model", "claude-\ud800")  # as a bug or a subclass could
    object.__setattr__(event, "language", "py\udfff")
    with TelemetryClient(make_config()) as client:
        client.track(event)
        result = client.flush(timeout=20)
    assert (result.delivered, result.remaining) == (0, 0)
    assert client.stats()["invalid"] == 1
    assert server.requests == []


# --- fuzzed server replies ------------------------------------------------------------------------
printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
retry_after = st.one_of(
    st.integers(min_value=-10, max_value=10**12).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "", " 5 ", "0.5"]),
    st.floats(min_value=-1e6, max_value=1e6).map(
        lambda f: formatdate(time.time() + f, usegmt=True)
    ),
    printable,
)


def _bodies(ids: list[str]) -> st.SearchStrategy[Any]:
    verdict = st.fixed_dictionaries(
        {
            "event_id": st.sampled_from([*ids, "", "junk", str(uuid.uuid4())]) | st.integers(),
            "status": st.sampled_from(["accepted", "duplicate", "rejected", "weird", ""])
            | st.integers(),
            "error": st.none() | printable | st.integers(),
        }
    )
    loc = st.lists(
        st.sampled_from(["body", "events", "model"])
        | st.integers(min_value=-2, max_value=len(ids) + 2),
        max_size=5,
    )
    return st.one_of(
        st.none(),
        st.binary(max_size=64),
        json_values,
        st.fixed_dictionaries(
            {"accepted": json_values, "rejected": json_values},
            optional={"results": st.lists(verdict | json_values, max_size=6) | json_values},
        ),
        st.fixed_dictionaries(
            {"detail": st.lists(st.fixed_dictionaries({"loc": loc, "msg": printable | st.none()}))}
        ),
        st.fixed_dictionaries({"detail": json_values}),
    )


statuses = st.sampled_from(
    [200, 201, 202, 204, 299, 400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 599]
) | st.integers(min_value=200, max_value=599)


@pytest.mark.parametrize(
    "examples", [pytest.param(30, id="short"), pytest.param(400, id="long", marks=pytest.mark.slow)]
)
def test_fuzzed_server_replies_never_break_the_worker_nor_lose_events(
    examples: int,
    server: FakeTelemetryServer,
    make_config: Config,
    outbox_path: Path,
    clients: list[TelemetryClient],
    caplog: pytest.LogCaptureFixture,
    report: Callable[..., None],
) -> None:
    """Any status, body and Retry-After: no worker failure; each event stored or dead-lettered."""
    offset = [0.0]  # the client's clocks jump past every pause between examples
    client = TelemetryClient(
        make_config(max_retries=0, batch_size=5, request_timeout_seconds=2.0),
        clock=lambda: time.time() + offset[0],
        monotonic=lambda: time.monotonic() + offset[0],
    )
    clients.append(client)
    client.start()
    tracked: set[str] = set()
    statuses_seen: set[int] = set()

    @settings(SETTINGS, max_examples=examples)
    @given(st.data())
    def exchange(data: st.DataObject) -> None:
        events = make_events(data.draw(st.integers(min_value=1, max_value=7)))
        ids = [str(e.event_id) for e in events]
        status = data.draw(statuses)
        headers = {"Retry-After": data.draw(retry_after)} if data.draw(st.booleans()) else {}
        body = data.draw(_bodies(ids))
        statuses_seen.add(status)
        server.script(ScriptedReply(status=status, headers=headers, body=body, store=True))
        for event in events:
            client.track(event)
        tracked.update(ids)
        client.flush(timeout=10)
        server.script()

        def drained() -> bool:
            offset[0] += 7200.0
            return client.flush(timeout=10).remaining == 0

        assert wait_until(drained, timeout=30)
        assert tracked <= {e["event_id"] for e in server.events} | dead_ids(outbox_path)

    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        exchange()
    failures = [r.getMessage() for r in caplog.records if "step failed" in r.getMessage()]
    stored = {e["event_id"] for e in server.events}
    dead = dead_ids(outbox_path)
    report(
        "bad-input",
        case="fuzzed server replies",
        examples=examples,
        distinct_statuses=len(statuses_seen),
        tracked=len(tracked),
        stored=len(tracked & stored),
        dead_lettered=len(tracked & dead - stored),
        lost=len(tracked - stored - dead),
        worker_failures=len(failures),
    )
    assert failures == []
    assert client.stats()["invalid"] == 0
