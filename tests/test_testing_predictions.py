"""Tests of mosaic_telemetry.testing.predictions: queries and answers of wire-v1 §2."""

from __future__ import annotations

import ast
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry import (
    Complexity,
    Confidence,
    PredictionData,
    PredictionMetadata,
    PredictionQuery,
    PredictionResponse,
    Provider,
    QualityPrediction,
    TaskType,
    TokenDistribution,
)
from mosaic_telemetry.testing import oracle, predictions

from .fake_wire import QUERY


def test_imports_only_the_public_door_and_the_oracle() -> None:
    """predictions.py reads the public models only: nothing of the SDK's wire layer."""
    tree = ast.parse(Path(predictions.__file__).read_text())
    relative = {
        (node.level, node.module)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 0
    }

    assert relative == {(2, None), (1, "oracle")}


def test_query_values_from_a_model_or_a_mapping_agree() -> None:
    """A PredictionQuery and its wire dict name the same four values, enums as wire strings."""
    model = PredictionQuery(
        task_type=TaskType.TESTING, model="m", provider=Provider.OPENAI, complexity=Complexity.LOW
    )
    mapping = {**QUERY, "task_type": TaskType.TESTING}

    assert predictions.query_values(model) == ("testing", "m", "openai", "low")
    assert predictions.query_values(mapping) == ("testing", "m", "openai", "low")


def test_query_missing_a_key_names_it() -> None:
    """A query mapping without one of the four keys is refused, naming the key."""
    with pytest.raises(ValueError, match="'complexity'"):
        predictions.query_values({"task_type": "testing", "model": "m", "provider": "openai"})


def test_to_wire_writes_a_response_as_wire_v1_json() -> None:
    """A PredictionResponse becomes the wire-v1 §2 dict: nested keys, enum values, ISO times."""
    distribution = TokenDistribution(p10=1, p25=2, median=3, p75=4, p90=5)
    response = PredictionResponse(
        prediction=PredictionData(
            input_tokens=distribution,
            output_tokens=distribution,
            cost_usd_micros={"median": 7},
            duration_ms={"median": 8},
            correction_factors={"input": 1.0, "output": 0.5},
            quality=QualityPrediction(gate_pass_rate=0.9, success_rate=0.8),
        ),
        metadata=PredictionMetadata(
            sample_size=3,
            fallback_level=1,
            confidence=Confidence.HIGH,
            last_updated=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        ),
    )
    tokens = {"p10": 1, "p25": 2, "median": 3, "p75": 4, "p90": 5}

    assert predictions.to_wire(response) == {
        "prediction": {
            "input_tokens": tokens,
            "output_tokens": tokens,
            "cost_usd_micros": {"median": 7},
            "duration_ms": {"median": 8},
            "correction_factors": {"input": 1.0, "output": 0.5},
            "quality": {"gate_pass_rate": 0.9, "success_rate": 0.8},
        },
        "metadata": {
            "sample_size": 3,
            "fallback_level": 1,
            "confidence": "high",
            "last_updated": "2026-01-02T03:04:05+00:00",
            "dimensions_matched": None,
            "fallback_note": None,
            "cache_hit": False,
        },
    }


def test_to_wire_copies_plain_data() -> None:
    """A plain dict is copied, so a later change by the caller does not reach stored answers."""
    answer: dict[str, Any] = {"prediction": None, "metadata": {"sample_size": 1}}

    stored = predictions.to_wire(answer)
    answer["metadata"]["sample_size"] = 99

    assert stored == {"prediction": None, "metadata": {"sample_size": 1}}


@pytest.mark.parametrize(
    ("ok_json", "payload"),
    [
        (False, None),
        (True, {"q": []}),
        (True, {"queries": []}),
        (True, {"queries": [QUERY] * 51}),
        (True, {"queries": [{k: v for k, v in QUERY.items() if k != "provider"}]}),
        (True, {"queries": [{**QUERY, "model": 5}]}),
        (True, {"queries": ["testing"]}),
    ],
    ids=["not-json", "no-queries", "empty", "51", "missing-key", "not-string", "not-object"],
)
def test_bad_prediction_body_is_400(ok_json: bool, payload: Any) -> None:
    """Bad JSON, 0 or more than 50 queries, or an incomplete query is a 400 with a detail."""
    reply = predictions.prediction_queries(ok_json, payload)

    assert isinstance(reply, oracle.Reply)
    assert reply.status == 400
    assert isinstance(reply.body["detail"], str)


def test_fifty_queries_are_read_and_no_data_answer_is_complete() -> None:
    """50 queries are within the limit; the "no data" answer carries every metadata key."""
    assert predictions.prediction_queries(True, {"queries": [QUERY] * 50}) == [QUERY] * 50
    answer = predictions.no_prediction()
    assert answer["prediction"] is None
    assert set(answer["metadata"]) == {
        "sample_size",
        "fallback_level",
        "confidence",
        "last_updated",
        "dimensions_matched",
        "fallback_note",
        "cache_hit",
    }
