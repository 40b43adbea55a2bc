"""Fixtures of the command-line tests: the env of a configured agent, a filled outbox file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry._store import LeaseOwner, OutboxReader, SqliteOutbox
from mosaic_telemetry._wire.events import event_to_json
from mosaic_telemetry.testing import FakeTelemetryServer

from ..helpers import API_KEY, INSTANCE_ID, make_events

#: When the ``filled`` fixture's events were tracked: an hour before the test runs.
HOUR_AGO = 3600.0


@pytest.fixture
def env(server: FakeTelemetryServer, outbox_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MOSAIC_TELEMETRY_* pointing at the test server and the test's outbox; returns its path."""
    monkeypatch.setenv("MOSAIC_TELEMETRY_SERVER_URL", server.url)
    monkeypatch.setenv("MOSAIC_TELEMETRY_API_KEY", API_KEY)
    monkeypatch.setenv("MOSAIC_TELEMETRY_INSTANCE_ID", INSTANCE_ID)
    monkeypatch.setenv("MOSAIC_TELEMETRY_OUTBOX_PATH", str(outbox_path))
    return outbox_path


@pytest.fixture
def filled(server: FakeTelemetryServer, outbox_path: Path) -> dict[str, Any]:
    """An outbox file with 4 pending events and 1 dead letter, closed (no -wal/-shm left).

    The events were tracked an hour ago (an injected clock), so ages are known.
    """
    import time

    tracked_at = time.time() - HOUR_AGO
    outbox = SqliteOutbox(outbox_path, server_url=server.url, clock=lambda: tracked_at)
    events = make_events(5)
    for event in events:
        outbox.add(str(event.event_id), event_to_json(event))
    claimed = outbox.claim(LeaseOwner.for_this_process(), 1, 30.0)
    outbox.dead_letter([(claimed[0].row_id, "rejected by server: bad key fixed later", 403)])
    outbox.close()
    ids = [str(e.event_id) for e in events]
    assert sorted(p.name for p in outbox_path.parent.iterdir()) == [outbox_path.name]
    status = OutboxReader(outbox_path).status()
    assert (status.pending, status.dead, status.leased) == (4, 1, 0)
    return {
        "path": outbox_path,
        "dead": ids[0],
        "pending": ids[1:],
        "tracked_at": tracked_at,
        "server_url": server.url,
    }


@pytest.fixture(autouse=True)
def _sdk_logger_restored() -> Iterator[None]:
    """main() leaves the mosaic_telemetry logger as it found it."""
    logger = logging.getLogger("mosaic_telemetry")
    handlers, level = list(logger.handlers), logger.level
    yield
    assert (list(logger.handlers), logger.level) == (handlers, level)
