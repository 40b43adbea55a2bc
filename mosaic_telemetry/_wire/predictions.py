"""Prediction requests and answers (wire-v1 §2), read leniently through the one converter."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .._models import PredictionQuery, PredictionResponse
from .convert import converter, structure_errors
from .http import KEY_QUERIES, KEY_RESULTS

__all__ = [
    "prediction_from_dict",
    "prediction_results",
    "prediction_to_dict",
    "prediction_to_json",
    "predictions_body",
    "query_key",
    "query_to_dict",
    "query_to_json",
]


def query_to_dict(query: PredictionQuery) -> dict[str, str]:
    """The wire dict of a prediction query."""
    return {
        "task_type": query.task_type.value,
        "model": query.model,
        "provider": query.provider.value,
        "complexity": query.complexity.value,
    }


def query_to_json(query: PredictionQuery) -> str:
    """``query_to_dict`` as compact JSON text (``PredictionQuery.to_json``)."""
    return json.dumps(query_to_dict(query), separators=(",", ":"), ensure_ascii=False)


def query_key(query: PredictionQuery) -> str:
    """A stable text key of a query, for the on-disk prediction cache."""
    return json.dumps(query_to_dict(query), sort_keys=True, separators=(",", ":"))


def predictions_body(queries: Sequence[PredictionQuery]) -> bytes:
    """The request body of a predictions batch."""
    return json.dumps({KEY_QUERIES: [query_to_dict(q) for q in queries]}).encode("utf-8")


def prediction_from_dict(payload: Any) -> PredictionResponse:
    """Read one PredictionResponse leniently; raises ValueError naming the bad field."""
    try:
        result: PredictionResponse = converter().structure(payload, PredictionResponse)
    except Exception as exc:  # cattrs' validation groups, TypeError, ValueError, KeyError
        raise ValueError(structure_errors(exc, "result")) from None
    return result


def prediction_to_dict(response: PredictionResponse) -> dict[str, Any]:
    """The JSON-ready dict of a response, for the on-disk cache (read by prediction_from_dict)."""
    result: dict[str, Any] = converter().unstructure(response)
    return result


def prediction_to_json(response: PredictionResponse) -> str:
    """``prediction_to_dict`` as compact JSON text (``PredictionResponse.to_json``)."""
    return json.dumps(prediction_to_dict(response), separators=(",", ":"), ensure_ascii=False)


def prediction_results(payload: Any) -> list[Any]:
    """The raw ``results`` list of a predictions reply (empty when unreadable)."""
    results = payload.get(KEY_RESULTS) if isinstance(payload, Mapping) else None
    return results if isinstance(results, list) else []
