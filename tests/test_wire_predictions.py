"""Prediction answers are read leniently and round-trip through the on-disk cache."""

from __future__ import annotations

import json

import pytest

from mosaic_telemetry._wire.predictions import prediction_from_dict, prediction_to_dict

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
