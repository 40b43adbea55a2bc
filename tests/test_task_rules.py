"""The pure rules at the end of a task block: duration bounds and estimates from medians."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mosaic_telemetry import (
    PredictionData,
    PredictionMetadata,
    PredictionResponse,
    QualityPrediction,
    TokenDistribution,
)
from mosaic_telemetry._task_rules import duration_ms, medians


@pytest.mark.parametrize(
    ("started", "ended", "expected"),
    [
        (10.0, 10.0, 0),
        (10.0, 10.0004, 0),
        (10.0, 10.0006, 1),
        (10.0, 9.0, 0),  # an injected clock stepped back: 0, not an invalid event
        (0.0, 90_000.0, 86_400_000),  # longer than the schema's 24 h: sent as 24 h
        (0.0, math.inf, 86_400_000),
        (0.0, math.nan, 0),
    ],
)
def test_duration_stays_within_the_schema(started: float, ended: float, expected: int) -> None:
    """Milliseconds between two readings, rounded and clamped to 0..86,400,000."""
    assert duration_ms(started, ended) == expected


def _tokens(median: int) -> TokenDistribution:
    return TokenDistribution(p10=1, p25=2, median=median, p75=4, p90=5)


def _answer(
    input_median: int = 110_000, output_median: int = 38_000, cost: Any = None
) -> PredictionResponse:
    data = PredictionData(
        input_tokens=_tokens(input_median),
        output_tokens=_tokens(output_median),
        cost_usd_micros={"median": 910_000, "p90": 1_500_000} if cost is None else cost,
        duration_ms={"median": 45_000},
        correction_factors={"input": 1.0, "output": 1.0},
        quality=QualityPrediction(gate_pass_rate=0.9, success_rate=0.9),
    )
    return PredictionResponse(prediction=data, metadata=_METADATA)


_METADATA = PredictionMetadata(sample_size=10, fallback_level=0, confidence="high")


def test_medians_of_a_prediction() -> None:
    """Input, output and cost medians become the three estimates."""
    assert medians(_answer()) == {
        "estimated_input_tokens": 110_000,
        "estimated_output_tokens": 38_000,
        "estimated_cost_usd_micros": 910_000,
    }


def test_medians_without_a_prediction_or_data_are_empty() -> None:
    """No answer, or an answer without data: nothing is claimed."""
    assert medians(None) == {}
    assert medians(PredictionResponse(prediction=None, metadata=_METADATA)) == {}


def test_medians_are_clamped_and_a_missing_cost_median_is_left_out() -> None:
    """Out-of-range medians are clamped; a cost mapping without "median" gives no cost."""
    answer = _answer(input_median=10**12, output_median=-3, cost={"p90": 5})
    assert medians(answer) == {
        "estimated_input_tokens": 10_000_000,
        "estimated_output_tokens": 0,
    }
