"""The fake server's side of wire-v1 §2: reading prediction queries, writing answers.

Like ``oracle``, written from the spec and independent of the SDK's wire layer; the public
models are read attribute by attribute, so a user may seed answers with SDK objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any

import attrs

from .. import PredictionQuery
from .oracle import MAX_PREDICTION_QUERIES, QUERY_KEYS, Reply, detail

__all__ = ["no_prediction", "prediction_queries", "query_values", "to_wire"]


def no_prediction() -> dict[str, Any]:
    """The answer for a combination without data."""
    return {
        "prediction": None,
        "metadata": {
            "sample_size": 0,
            "fallback_level": 0,
            "confidence": "none",
            "last_updated": None,
            "dimensions_matched": None,
            "fallback_note": "no data",
            "cache_hit": False,
        },
    }


def prediction_queries(ok_json: bool, payload: Any) -> list[dict[str, Any]] | Reply:
    """The queries of a well-formed predictions body, or the 400 reply that refuses it."""
    if not ok_json:
        return detail(400, "body is not valid JSON")
    queries = payload.get("queries") if isinstance(payload, dict) else None
    if not isinstance(queries, list):
        return detail(400, "body must be an object with a 'queries' list")
    if not 1 <= len(queries) <= MAX_PREDICTION_QUERIES:
        return detail(400, f"1..{MAX_PREDICTION_QUERIES} queries a request, got {len(queries)}")
    for index, query in enumerate(queries):
        if not isinstance(query, dict) or not all(
            isinstance(query.get(k), str) for k in QUERY_KEYS
        ):
            return detail(400, f"queries[{index}] needs string {', '.join(QUERY_KEYS)}")
    return queries


def query_values(query: PredictionQuery | Mapping[str, Any]) -> tuple[str, ...]:
    """The four values that identify a prediction query, as wire strings."""
    if isinstance(query, PredictionQuery):
        return tuple(str(to_wire(getattr(query, key))) for key in QUERY_KEYS)
    missing = [key for key in QUERY_KEYS if key not in query]
    if missing:
        raise ValueError(f"prediction query lacks {missing[0]!r}")
    return tuple(str(to_wire(query[key])) for key in QUERY_KEYS)


def to_wire(value: Any) -> Any:
    """A model (attrs instance), enum or datetime as plain JSON-ready data, keys as named."""
    if attrs.has(type(value)):
        return {f.name: to_wire(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): to_wire(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(item) for item in value]
    return value
