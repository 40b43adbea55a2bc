"""The SDK's logging: rate-limited, never feeding back into itself."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from mosaic_telemetry import TelemetryClient, TelemetryConfig
from mosaic_telemetry._log import RateLimitedLogger

Config = Callable[..., TelemetryConfig]


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeats_are_held_back_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    """One line per key per interval; the next line says how many were held back."""
    clock = Clock()
    log = RateLimitedLogger(60.0, clock=clock)
    with caplog.at_level(logging.ERROR, logger="mosaic_telemetry"):
        assert log.error("k", "down %d", 1)
        assert not log.error("k", "down %d", 2)
        assert not log.error("k", "down %d", 3)
        assert log.error("other", "different")
        clock.now = 61.0
        assert log.error("k", "down %d", 4)
    assert [r.getMessage() for r in caplog.records] == [
        "down 1",
        "different",
        "down 4 (2 similar messages held back)",
    ]


def test_reset_lets_the_next_message_through(caplog: pytest.LogCaptureFixture) -> None:
    """After reset(key) (a failure streak ended) the next failure is logged at once."""
    log = RateLimitedLogger(60.0, clock=Clock())
    with caplog.at_level(logging.ERROR, logger="mosaic_telemetry"):
        log.error("k", "first")
        log.reset("k")
        log.error("k", "second")
    assert [r.getMessage() for r in caplog.records] == ["first", "second"]


def test_a_handler_that_tracks_does_not_loop(
    make_config: Config, clients: list[TelemetryClient]
) -> None:
    """A log handler that calls track() on every record cannot make the SDK recurse."""
    client = TelemetryClient(make_config())
    clients.append(client)
    client._log = RateLimitedLogger(0.0)  # no rate limit: only the guard can stop the loop
    calls = 0

    class Tracking(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            nonlocal calls
            calls += 1
            client.track("not an event")  # type: ignore[arg-type]  # fails, and would log

    handler = Tracking()
    target = logging.getLogger("mosaic_telemetry")
    target.addHandler(handler)
    try:
        client.track(None)  # type: ignore[arg-type]
    finally:
        target.removeHandler(handler)
    assert calls == 1
    assert client.stats()["invalid"] == 2
