"""Scenario: a burst with default settings and a server 100 ms away. Nothing is evicted (the
default bound is sized for a disk: 200,000), every event arrives once, and the ledgers of the
client and of the file balance.

Before, with upstream's in-memory default of 1,000, a 10,000-event burst evicted rows that
were in flight and counted them twice (issue 10: the server stored 6,245, ``stats()`` said
8,518 evicted, and one warning said "evicted the 1 oldest").
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mosaic_telemetry import TelemetryClient, TelemetryConfig
from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from ..helpers import make_events

Config = Callable[..., TelemetryConfig]


@pytest.mark.parametrize(
    "count",
    [pytest.param(10_000, id="10k"), pytest.param(100_000, id="100k", marks=pytest.mark.slow)],
)
def test_a_burst_with_default_settings_loses_nothing(
    count: int,
    server: FakeTelemetryServer,
    make_config: Config,
    report: Callable[..., None],
) -> None:
    """``count`` events tracked at once, every reply 100 ms late: all stored once, none evicted."""
    server.script(*[ScriptedReply(delay=0.1)] * (count // 100 + 50))
    events = make_events(count)
    client = TelemetryClient(make_config(submit_interval_seconds=300.0))  # the rest: defaults
    client.start()
    for event in events:
        client.track(event)
    result = client.flush(timeout=count / 100 * 0.1 * 3 + 60)
    stats = client.stats()
    client.stop()
    ids = [e["event_id"] for e in server.events]
    ledger = stats["ledger"]
    report(
        "burst",
        events=count,
        stored=len(set(ids)),
        stored_twice=len(ids) - len(set(ids)),
        evicted=stats["evicted"],
        remaining=result.remaining,
        ledger=ledger,
    )
    assert (result.remaining, stats["evicted"], ledger["evicted"]) == (0, 0, 0)
    assert set(ids) == {str(e.event_id) for e in events} and len(ids) == count
    assert ledger["tracked"] == ledger["delivered"] + ledger["duplicates"] == count
