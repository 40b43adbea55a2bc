"""Hand-written wire-v1 requests for the tests of ``mosaic_telemetry.testing``.

The events here are literal JSON dicts, not SDK objects: the test kit must judge what a client
sends, whoever built it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import requests

from mosaic_telemetry.testing import FakeTelemetryServer

KEY = "ab" * 32
OTHER_KEY = "cd" * 32
EVENTS_PATH = "/v1/events/batch"
PREDICTIONS_PATH = "/v1/predictions/batch"
QUERY = {"task_type": "testing", "model": "m", "provider": "openai", "complexity": "low"}


def now_text(delta: timedelta = timedelta(0)) -> str:
    """Now (plus ``delta``) as a wire timestamp."""
    return (datetime.now(timezone.utc) + delta).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def valid_event(**overrides: Any) -> dict[str, Any]:
    """A schema 1.0 event dict that the server accepts, with ``overrides`` applied."""
    event: dict[str, Any] = {
        "instance_id": str(uuid.uuid4()),
        "event_id": str(uuid.uuid4()),
        "timestamp": now_text(),
        "task_duration_ms": 1234,
        "task_type": "implementation",
        "complexity": "medium",
        "harness": "claude_code",
        "model": "claude-sonnet-4",
        "provider": "anthropic",
        "estimated_input_tokens": 1000,
        "estimated_output_tokens": 500,
        "actual_input_tokens": 1100,
        "actual_output_tokens": 450,
        "estimated_cost_usd_micros": 20_000,
        "actual_cost_usd_micros": 21_000,
        "quality_gate_passed": True,
        "quality_gates_run": ["build", "lint", "test"],
        "quality_gates_failed": [],
        "context_compactions": 0,
        "context_rotations": 0,
        "context_utilization_final": 0.4,
        "outcome": "success",
        "retry_count": 0,
        "language": "python",
        "repo_size_category": "medium",
    }
    event.update(overrides)
    return event


def post_events(
    server: FakeTelemetryServer,
    events: list[Any],
    *,
    key: str | None = KEY,
    timeout: float = 5.0,
    session: requests.Session | None = None,
) -> requests.Response:
    """POST ``{"events": events}`` with a Bearer key (None: no Authorization header)."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    poster = session if session is not None else requests
    return poster.post(
        server.url + EVENTS_PATH, json={"events": events}, headers=headers, timeout=timeout
    )


def post_queries(server: FakeTelemetryServer, queries: list[Any]) -> requests.Response:
    """POST ``{"queries": queries}`` without any Authorization header."""
    return requests.post(server.url + PREDICTIONS_PATH, json={"queries": queries}, timeout=5)


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``target`` in a started daemon thread; exceptions it raises land in the list."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def handler_threads(port: int) -> list[threading.Thread]:
    """The fake's handler threads for ``port`` that are still alive."""
    name = f"FakeTelemetryServer-handler:{port}"
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]
