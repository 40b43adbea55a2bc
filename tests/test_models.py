"""The models' to_dict()/to_json() and their pydantic-named aliases equal what goes on the wire."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from mosaic_telemetry import (
    Complexity,
    PredictionQuery,
    PredictionResponse,
    Provider,
    TaskType,
    TelemetryClient,
    TelemetryConfig,
)
from mosaic_telemetry._wire.http import EVENTS_PATH, PREDICTIONS_PATH
from mosaic_telemetry._wire.predictions import prediction_from_dict
from mosaic_telemetry.testing import FakeTelemetryServer

from .helpers import ANSWER, make_event, make_events

Config = Callable[..., TelemetryConfig]

QUERY = PredictionQuery(
    task_type=TaskType.IMPLEMENTATION,
    model="claude-sonnet-4-5-20250929",
    provider=Provider.ANTHROPIC,
    complexity=Complexity.MEDIUM,
)


def test_event_dict_and_json_are_the_bytes_the_server_receives(
    server: FakeTelemetryServer, make_config: Config
) -> None:
    """Tracked and flushed, the request body is exactly the events' to_json() in a batch."""
    events = make_events(3)
    with TelemetryClient(make_config()) as client:
        for event in events:
            client.track(event)
        assert client.flush(timeout=30).remaining == 0
    [request] = [r for r in server.requests if r.path == EVENTS_PATH]
    expected = '{"events":[' + ",".join(e.to_json() for e in events) + "]}"
    assert request.body == expected.encode("utf-8")
    assert request.json["events"] == [e.to_dict() for e in events]


def test_model_dump_aliases_equal_to_dict_and_to_json() -> None:
    """model_dump() (either mode) is to_dict(); model_dump_json() is to_json()."""
    event = make_event(language="python")
    assert event.model_dump() == event.model_dump(mode="json") == event.to_dict()
    assert event.model_dump_json() == event.to_json()
    assert json.loads(event.to_json()) == event.to_dict()


def test_event_dict_holds_json_types_only() -> None:
    """to_dict() is JSON-ready: ids, time and enums are strings; json.dumps needs no help."""
    event = make_event()
    data = event.to_dict()
    assert data["event_id"] == str(event.event_id)
    assert data["timestamp"].endswith("Z")
    assert data["task_type"] == event.task_type.value
    assert data["quality_gates_run"] == [gate.value for gate in event.quality_gates_run]
    assert json.loads(json.dumps(data)) == data


def test_model_dump_refuses_an_unknown_mode() -> None:
    """A mode pydantic does not have either is a clear error naming the argument."""
    with pytest.raises(ValueError, match="mode: must be 'python' or 'json', got 'yaml'"):
        make_event().model_dump(mode="yaml")


def test_model_dump_refuses_pydantic_options_it_does_not_implement() -> None:
    """Options such as exclude= are refused loudly, never silently ignored."""
    with pytest.raises(TypeError, match="exclude"):
        make_event().model_dump(exclude={"model"})  # type: ignore[call-arg]


def test_query_dict_is_the_query_the_server_receives(
    server: FakeTelemetryServer, make_config: Config
) -> None:
    """A prediction refresh sends exactly QUERY.to_dict() as its query."""
    server.set_prediction(QUERY, ANSWER)
    with TelemetryClient(make_config()) as client:
        client.refresh_predictions_sync([QUERY])
    [request] = [r for r in server.requests if r.path == PREDICTIONS_PATH]
    assert request.json["queries"] == [QUERY.to_dict()]
    assert QUERY.model_dump() == QUERY.to_dict()
    assert json.loads(QUERY.model_dump_json()) == QUERY.to_dict()


def test_response_dict_reads_back_to_the_same_response(
    server: FakeTelemetryServer, make_config: Config
) -> None:
    """The prediction the client got from the server survives to_dict()/to_json() unchanged."""
    server.set_prediction(QUERY, ANSWER)
    with TelemetryClient(make_config()) as client:
        client.refresh_predictions_sync([QUERY])
        response = client.get_prediction(QUERY)
    assert isinstance(response, PredictionResponse)
    assert prediction_from_dict(response.to_dict()) == response
    assert prediction_from_dict(json.loads(response.model_dump_json())) == response
    assert response.to_dict()["prediction"]["input_tokens"] == ANSWER["prediction"]["input_tokens"]


def test_models_stay_dumb() -> None:
    """The models module holds no JSON logic of its own: it delegates to the codec."""
    import inspect
    import re

    from mosaic_telemetry import _models

    source = inspect.getsource(_models)
    assert re.findall(r"^\s*(?:import json|from json)|json\.(?:dumps|loads)", source, re.M) == []
