"""The HTTP contract of Telemetry API v1 (wire-v1 §1, §2): paths, headers, keys and limits."""

from __future__ import annotations

from typing import Final

__all__ = [
    "CONTENT_TYPE_JSON",
    "EVENTS_PATH",
    "HEADER_AUTHORIZATION",
    "HEADER_CONTENT_ENCODING",
    "HEADER_CONTENT_TYPE",
    "HEADER_RETRY_AFTER",
    "HEADER_SCHEMA_VERSION",
    "HEADER_USER_AGENT",
    "KEY_DETAIL",
    "KEY_ERROR",
    "KEY_EVENTS",
    "KEY_EVENT_ID",
    "KEY_LOC",
    "KEY_MSG",
    "KEY_QUERIES",
    "KEY_RESULTS",
    "KEY_STATUS",
    "MAX_BATCH_EVENTS",
    "MAX_PREDICTION_QUERIES",
    "MAX_REPLY_BYTES",
    "PREDICTIONS_PATH",
    "QUERY_KEYS",
    "SCHEMA_VERSION",
    "STATUS_ACCEPTED",
    "STATUS_DUPLICATE",
    "STATUS_REJECTED",
    "USER_AGENT_PREFIX",
    "auth_header",
    "event_headers",
    "prediction_headers",
]

EVENTS_PATH: Final = "/v1/events/batch"
PREDICTIONS_PATH: Final = "/v1/predictions/batch"
SCHEMA_VERSION: Final = "1.0"
HEADER_AUTHORIZATION: Final = "Authorization"
HEADER_CONTENT_TYPE: Final = "Content-Type"
HEADER_CONTENT_ENCODING: Final = "Content-Encoding"
HEADER_USER_AGENT: Final = "User-Agent"
HEADER_SCHEMA_VERSION: Final = "X-Telemetry-Schema-Version"
HEADER_RETRY_AFTER: Final = "Retry-After"
CONTENT_TYPE_JSON: Final = "application/json"
USER_AGENT_PREFIX: Final = "mosaicstack-telemetry-python/"
MAX_BATCH_EVENTS: Final = 100
MAX_PREDICTION_QUERIES: Final = 50
#: Replies are never trusted to be small: this much is read at most.
MAX_REPLY_BYTES: Final = 1 << 20

KEY_EVENTS: Final = "events"
KEY_QUERIES: Final = "queries"
KEY_RESULTS: Final = "results"
KEY_EVENT_ID: Final = "event_id"
KEY_STATUS: Final = "status"
KEY_ERROR: Final = "error"
KEY_DETAIL: Final = "detail"
KEY_LOC: Final = "loc"
KEY_MSG: Final = "msg"
STATUS_ACCEPTED: Final = "accepted"
STATUS_DUPLICATE: Final = "duplicate"
STATUS_REJECTED: Final = "rejected"
QUERY_KEYS: Final = ("task_type", "model", "provider", "complexity")


def auth_header(api_key: str) -> str:
    """The value of the Authorization header for ``api_key``."""
    return f"Bearer {api_key}"


def event_headers(api_key: str, version: str, *, gzip: bool = False) -> dict[str, str]:
    """Headers of an events batch request."""
    headers = {
        HEADER_AUTHORIZATION: auth_header(api_key),
        HEADER_CONTENT_TYPE: CONTENT_TYPE_JSON,
        HEADER_USER_AGENT: USER_AGENT_PREFIX + version,
        HEADER_SCHEMA_VERSION: SCHEMA_VERSION,
    }
    if gzip:
        headers[HEADER_CONTENT_ENCODING] = "gzip"
    return headers


def prediction_headers(version: str) -> dict[str, str]:
    """Headers of a predictions request: public, so no Authorization."""
    return {
        HEADER_CONTENT_TYPE: CONTENT_TYPE_JSON,
        HEADER_USER_AGENT: USER_AGENT_PREFIX + version,
        HEADER_SCHEMA_VERSION: SCHEMA_VERSION,
    }
