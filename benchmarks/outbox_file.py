"""Figures 7 and 8: the outbox file at scale. Space given back after a drain; ``status`` time.

One outbox file goes through a whole life in this process:

1. a client that is not started tracks ``count`` events (built in chunks, so memory stays
   small): the outbox holds ``count`` pending events;
2. ``mosaic-telemetry status --outbox FILE`` and ``python -c "import sqlite3; ...COUNT(*)..."``
   on the same file, each a fresh interpreter with bytecode caches, alternating: wall times
   and the median of per-round ratios, at ``count`` pending;
3. a started client (``submit_interval_seconds`` short, so that an idle cycle is short too)
   drains it to the fast peer sink; after ``flush()`` returns it stays idle for one interval
   and a half, and the file (database + WAL) is measured again;
4. ``status`` beside ``COUNT(*)`` once more, at 0 pending.

The peak is the largest size (database + WAL) sampled every 0.2 s during 1 and 3.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from common import (
    INSTANCE_ID,
    Sink,
    TelemetryClient,
    child_pythonpath,
    client_config,
    example_event_builder,
)

INTERVAL = 2.0  # the draining client's submit_interval_seconds: one idle cycle
CHUNK = 10_000


def file_bytes(path: pathlib.Path) -> int:
    """Bytes of the database file and its WAL."""
    total = 0
    for name in (str(path), f"{path}-wal"):
        with contextlib.suppress(OSError):  # no WAL file
            total += os.stat(name).st_size
    return total


class PeakSampler:
    """Samples ``file_bytes(path)`` every 0.2 s in a thread; ``peak`` is the largest seen."""

    def __init__(self, path: pathlib.Path) -> None:
        self._path = path
        self._done = threading.Event()
        self.peak = file_bytes(path)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.2):
            self.peak = max(self.peak, file_bytes(self._path))

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, file_bytes(self._path))
        return self.peak


def _count_code(path: pathlib.Path) -> str:
    uri = pathlib.Path(path).resolve().as_uri() + "?mode=ro"
    return (
        f"import sqlite3; c = sqlite3.connect({uri!r}, uri=True); "
        "print(c.execute('SELECT COUNT(*) FROM events').fetchone()[0])"
    )


def status_times(path: pathlib.Path, rounds: int) -> dict[str, Any]:
    """Wall seconds of ``status`` and of the plain ``COUNT(*)``, alternating; their ratio."""
    commands = {
        "status": [sys.executable, "-m", "mosaic_telemetry", "status", "--outbox", str(path)],
        "count": [sys.executable, "-c", _count_code(path)],
    }
    times: dict[str, list[float]] = {key: [] for key in commands}
    with tempfile.TemporaryDirectory(prefix="mosaic-bench-pycache-") as pycache:
        env = {**os.environ, "PYTHONPATH": child_pythonpath(), "PYTHONPYCACHEPREFIX": pycache}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env = {k: v for k, v in env.items() if not k.startswith("MOSAIC_TELEMETRY_")}

        def run(key: str) -> tuple[float, str]:
            started = time.perf_counter()
            proc = subprocess.run(
                commands[key], capture_output=True, text=True, env=env, timeout=120
            )
            seconds = time.perf_counter() - started
            if proc.returncode != 0:
                raise RuntimeError(f"{key} failed ({proc.returncode}): {proc.stderr[-1000:]}")
            return seconds, proc.stdout

        for key in commands:  # bytecode caches written
            run(key)
        for r in range(rounds):
            for key in commands if r % 2 == 0 else reversed(list(commands)):
                times[key].append(run(key)[0])
        counted = int(run("count")[1].strip())
    ours, theirs = times["status"], times["count"]
    return {
        "status_ms": statistics.median(ours) * 1000,
        "count_ms": statistics.median(theirs) * 1000,
        "ratio": statistics.median(o / t for o, t in zip(ours, theirs, strict=True)),
        "rows": counted,
    }


def run(
    *, folder: pathlib.Path, sink: Sink, count: int, status_rounds: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """The whole life of one outbox file (see the module docstring)."""
    path = folder / "at-scale.sqlite3"
    sampler = PeakSampler(path)
    tracker = TelemetryClient(client_config(sink.url, path, max_queue_size=count))
    builder = example_event_builder(INSTANCE_ID)
    started = time.perf_counter()
    for done in range(0, count, CHUNK):
        for _ in range(min(CHUNK, count - done)):
            tracker.track(builder.build())
    tracked_seconds = time.perf_counter() - started
    pending = tracker.queue_size
    tracker.stop()
    log(f"    tracked {pending:,} in {tracked_seconds:.0f} s; status at {pending:,} pending")
    full = status_times(path, status_rounds)
    sink.reset()
    config = client_config(sink.url, path, max_queue_size=count, submit_interval_seconds=INTERVAL)
    drainer = TelemetryClient(config)
    started = time.perf_counter()
    drainer.start()
    result = drainer.flush(timeout=3600)
    drain_seconds = time.perf_counter() - started
    peak = sampler.stop()
    log(f"    drained in {drain_seconds:.0f} s; idle for {INTERVAL * 1.5:.0f} s")
    after_drain = file_bytes(path)
    time.sleep(INTERVAL * 1.5)  # one idle cycle of the worker, and a half
    after_idle = file_bytes(path)
    drainer.stop()
    empty = status_times(path, status_rounds)
    return {
        "count": count,
        "pending": pending,
        "remaining": result.remaining,
        "delivered": sink.count(),
        "peak_bytes": peak,
        "after_drain_bytes": after_drain,
        "after_idle_bytes": after_idle,
        "status_full": full,
        "status_empty": empty,
        "track_seconds": tracked_seconds,
        "drain_seconds": drain_seconds,
    }
