"""Shared fixtures: a real loopback server and configs writing real outbox files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry import TelemetryClient, TelemetryConfig
from mosaic_telemetry.testing import FakeTelemetryServer

from .helpers import API_KEY, INSTANCE_ID


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the developer's MOSAIC_TELEMETRY_* settings."""
    import os

    for name in list(os.environ):
        if name.startswith("MOSAIC_TELEMETRY_"):
            monkeypatch.delenv(name)


@pytest.fixture
def server() -> Iterator[FakeTelemetryServer]:
    """A started FakeTelemetryServer that requires the tests' API key."""
    with FakeTelemetryServer(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
def outbox_path(tmp_path: Path) -> Path:
    """Where the test's outbox file goes."""
    return tmp_path / "state" / "outbox.sqlite3"


@pytest.fixture
def make_config(server: FakeTelemetryServer, outbox_path: Path) -> Callable[..., TelemetryConfig]:
    """Build a config for the test server and outbox; keyword arguments override."""

    def make(**overrides: Any) -> TelemetryConfig:
        values: dict[str, Any] = {
            "server_url": server.url,
            "api_key": API_KEY,
            "instance_id": INSTANCE_ID,
            "outbox_path": outbox_path,
            "submit_interval_seconds": 3600.0,
            "request_timeout_seconds": 5.0,
        }
        values.update(overrides)
        return TelemetryConfig(**values)

    return make


@pytest.fixture
def clients() -> Iterator[list[TelemetryClient]]:
    """A list the test appends its clients to; each is stopped at the end."""
    made: list[TelemetryClient] = []
    yield made
    for client in made:
        client.stop()
