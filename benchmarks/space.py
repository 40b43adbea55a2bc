"""Figure: space given back. ``count`` events written to an outbox, drained the way the worker
drains (claim and ack batches of 100, no network), then one maintenance cycle (the worker's
``checkpoint()``): the size of the file (with its ``-wal``) at the peak, after the drain and
after that cycle. Issue 15's target: at most 10 % of the peak after a 1,000,000-event drain.

Run as ``python benchmarks/space.py [COUNT]`` (default 1,000,000: about 1.1 GB of disk for a
minute); ``measure()`` is the function a runner calls.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile
import time
from typing import Any

from common import example_event

from mosaic_telemetry._store import SqliteOutbox
from mosaic_telemetry._wire.events import event_to_json


def _size(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(f"{path.name}-wal")) if p.exists())


def measure(count: int = 1_000_000) -> dict[str, Any]:
    """Peak, after-drain and after-one-cycle sizes of an outbox that held ``count`` events."""
    body = event_to_json(example_event())
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "outbox.sqlite3"
        outbox = SqliteOutbox(path, max_pending=count + 1)
        started = time.perf_counter()
        for start in range(0, count, 1000):
            ids = range(start, min(count, start + 1000))
            outbox.add_many([(f"{n:08x}-0000-4000-8000-000000000000", body) for n in ids])
        outbox.checkpoint()
        peak, filled = _size(path), time.perf_counter() - started
        owner = outbox.lease_owner()
        started = time.perf_counter()
        while rows := outbox.claim(owner, 100, 60.0):
            outbox.ack([r.row_id for r in rows])
        drained, drain_s = _size(path), time.perf_counter() - started
        started = time.perf_counter()
        outbox.checkpoint()  # the worker's maintenance of one (idle) cycle
        cycle_s = time.perf_counter() - started
        after = _size(path)
        ledger = outbox.ledger()
        outbox.close()
    return {
        "events": count,
        "body_bytes": len(body),
        "peak_bytes": peak,
        "bytes_per_event": round(peak / count),
        "after_drain_bytes": drained,
        "after_one_cycle_bytes": after,
        "after_cycle_share_of_peak": round(after / peak, 5),
        "fill_s": round(filled, 1),
        "drain_s": round(drain_s, 1),
        "cycle_s": round(cycle_s, 2),
        "ledger_balanced": ledger.balanced,
    }


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)))
