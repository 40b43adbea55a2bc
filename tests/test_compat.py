"""Older dependency releases: tenacity's retry state, and a reply that must really be read.

The last test is one the minimum-versions env (``tox -e min``: requests 2.25, urllib3 1.26)
and ``tox -e urllib3-no-read1`` (urllib3 2.1) exist for: over a real socket, a client that
cannot read the reply never acknowledges the batch.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from mosaic_telemetry import TelemetryClient, TelemetryConfig
from mosaic_telemetry._delivery.compat import upcoming_sleep
from mosaic_telemetry._wire.events import event_to_dict
from mosaic_telemetry.testing import FakeTelemetryServer

from .helpers import make_event, make_events

# --- tenacity ----------------------------------------------------------------------------------


def test_upcoming_sleep_of_tenacity_8_3_and_later() -> None:
    """tenacity >= 8.3 says the next wait in ``upcoming_sleep``."""
    assert upcoming_sleep(SimpleNamespace(upcoming_sleep=2.5, next_action=None)) == 2.5


def test_upcoming_sleep_of_tenacity_before_8_3() -> None:
    """tenacity < 8.3 says it in ``next_action.sleep`` (no ``upcoming_sleep`` attribute)."""
    assert upcoming_sleep(SimpleNamespace(next_action=SimpleNamespace(sleep=4))) == 4.0


def test_upcoming_sleep_of_the_installed_tenacity() -> None:
    """With the tenacity installed here, the hook sees the wait the strategy chose."""
    import tenacity

    seen: list[float] = []
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda value: value < 2),
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_fixed(0.25),
        sleep=lambda seconds: None,
        before_sleep=lambda retry_state: seen.append(upcoming_sleep(retry_state)),
    )
    calls = iter(range(3))
    assert retrying(lambda: next(calls)) == 2
    assert seen == [0.25, 0.25]


# --- real sockets -------------------------------------------------------------------------------


def _inject_rejected(outbox: Path) -> str:
    """Put one event the server refuses (empty model) straight into the outbox; its id."""
    body = event_to_dict(make_event())
    body["model"] = ""
    with sqlite3.connect(outbox, timeout=10) as db:
        db.execute(
            "INSERT INTO events (event_id, body, enqueued_at) VALUES (?, ?, ?)",
            (body["event_id"], json.dumps(body), time.time()),
        )
    return str(body["event_id"])


def test_reply_verdicts_are_read_over_a_real_socket(
    server: FakeTelemetryServer,
    make_config: Callable[..., TelemetryConfig],
    outbox_path: Path,
) -> None:
    """One event rejected by verdict ends dead-lettered, the rest delivered once, none pending.

    Only a client that reads the reply gets there: one that cannot (the transport that called
    urllib3's read1, on urllib3 2.1) never acknowledges the batch, resends it, and the flush
    ends with events remaining.
    """
    events = make_events(5)
    with TelemetryClient(make_config()) as client:
        for event in events:
            client.track(event)
        rejected = _inject_rejected(outbox_path)
        result = client.flush(timeout=30)
        stats = client.stats()
    assert (result.delivered, result.dead_lettered, result.remaining) == (5, 1, 0)
    assert (stats["delivered"], stats["dead_lettered"], stats["pending"]) == (5, 1, 0)
    assert sorted(server.event_ids_received) == sorted(
        [str(e.event_id) for e in events] + [rejected]
    )
    assert sorted(e["event_id"] for e in server.events) == sorted(str(e.event_id) for e in events)
    assert server.duplicates_received == 0
    with sqlite3.connect(outbox_path) as db:
        assert db.execute("SELECT event_id FROM dead").fetchall() == [(rejected,)]
