"""Scenario 13: values we can't encode (issue 11). An event changed after ``build()`` (through
``object.__setattr__``) to hold NaN, an infinity or a value of the wrong type is refused by
``track()`` like any invalid event: counted ``invalid``, logged once naming the field, never
stored (promise 9: the outbox holds JSON), never sent, so no batch is bisected with 400s.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from mosaic_telemetry import TaskCompletionEvent, TelemetryClient, TelemetryConfig
from mosaic_telemetry.testing import FakeTelemetryServer

from ..helpers import make_event, make_events

Config = Callable[..., TelemetryConfig]


def _broken(field: str, value: object) -> TaskCompletionEvent:
    event = make_event()
    object.__setattr__(event, field, value)  # what a frozen attrs class cannot stop
    return event


def test_unencodable_values_set_after_build_are_refused_by_track(
    server: FakeTelemetryServer,
    make_config: Config,
    outbox_path: Path,
    clients: list[TelemetryClient],
    caplog: pytest.LogCaptureFixture,
    report: Callable[..., None],
) -> None:
    """NaN, +inf, -inf and a float in an int field are counted invalid, logged once by field,
    never stored nor sent; the 3 valid events go out in one request with no 400."""
    broken = [
        _broken("context_utilization_final", float("nan")),
        _broken("context_utilization_final", float("inf")),
        _broken("context_utilization_final", float("-inf")),
        _broken("retry_count", 1.5),
    ]
    valid = make_events(3)
    client = TelemetryClient(make_config())
    clients.append(client)
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        client.start()
        for event in [valid[0], *broken, *valid[1:]]:
            client.track(event)  # never raises
        result = client.flush(timeout=20)
        stats = client.stats()
    with sqlite3.connect(outbox_path) as db:
        stored = {
            row[0]
            for row in db.execute("SELECT event_id FROM events UNION ALL SELECT event_id FROM dead")
        }
        bodies = [row[0] for row in db.execute("SELECT body FROM events")]
    bad_ids = {str(e.event_id) for e in broken}
    statuses = [r.status for r in server.requests]
    refused = [r.getMessage() for r in caplog.records if "not tracked" in r.getMessage()]
    report(
        "hostile values",
        case="NaN/inf/wrong type set after build()",
        tracked=stats["tracked"],
        invalid=stats["invalid"],
        requests=len(statuses),
        statuses=statuses,
        log_lines=len(refused),
    )
    assert (stats["tracked"], stats["invalid"]) == (3, 4)
    assert (result.delivered, result.remaining) == (3, 0)
    assert statuses == [202]
    assert sorted(e["event_id"] for e in server.events) == sorted(str(e.event_id) for e in valid)
    assert not bad_ids & stored and not any("NaN" in b or "Infinity" in b for b in bodies)
    assert len(refused) == 1 and "context_utilization_final" in refused[0], refused
