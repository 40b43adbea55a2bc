"""Test helpers for code that uses the SDK: a fake API v1 server on a real socket, a mock transport.

``FakeTelemetryServer`` speaks ``wire-v1.md`` over real sockets on 127.0.0.1, so the whole SDK
(outbox, worker, retries, gzip, keep-alive) is exercised exactly as in production. It judges
every event against the schema table of wire-v1 §3 on its own (``oracle`` shares no wire
constants or validation with the SDK, so it catches SDK bugs), stores valid events once per
``event_id`` and records every request. Faults are scripted per request::

    from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

    def test_survives_rate_limit() -> None:
        with FakeTelemetryServer() as server:
            server.script(ScriptedReply(status=429, headers={"Retry-After": "1"}),
                          ScriptedReply(drop=True))          # then normal replies
            config = TelemetryConfig(server_url=server.url, api_key="ab" * 32, ...)
            ...                                             # track events, flush
            assert server.wait_for_events(3)
            assert server.duplicates_received == 0

``MockTransport`` replaces the HTTP stack instead (``TelemetryClient(config,
transport=MockTransport(handler))``): no socket, no real waiting; see ``testing.mock``.

``mosaic-telemetry serve`` runs the same server in the foreground, for code under test in
another process (an app under uvicorn or gunicorn); ``GET /_fake/events`` reads it back.

With pytest, enable the plugin once (``pytest_plugins = ["mosaic_telemetry.testing"]`` in
your root ``conftest.py``) and ask for the ``fake_telemetry_server`` fixture: a started server,
stopped after the test. pytest is optional: the fixture exists only when pytest is installed.
"""

from __future__ import annotations

from collections.abc import Iterator

from .._delivery.seam import TransportRequest, TransportResponse
from .example import example_event_builder
from .mock import MockTransport
from .replies import RecordedRequest, ScriptedReply
from .server import FakeTelemetryServer

__all__ = [
    "FakeTelemetryServer",
    "MockTransport",
    "RecordedRequest",
    "ScriptedReply",
    "TransportRequest",
    "TransportResponse",
    "example_event_builder",
]

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:
    __all__ += ["fake_telemetry_server"]

    @pytest.fixture
    def fake_telemetry_server() -> Iterator[FakeTelemetryServer]:
        """A started ``FakeTelemetryServer``, stopped after the test."""
        with FakeTelemetryServer() as server:
            yield server
