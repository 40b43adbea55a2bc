"""Scenario 8: soak. A child process tracks at a steady rate while the server keeps failing in
turn (5xx, timeouts, dropped connections, 429/503 with Retry-After); the test samples the
child's RSS, open file descriptors, thread count and WAL size. They stay flat, and every
event is delivered. The long variant lasts ``MOSAIC_SOAK_SECONDS`` (default 1800).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from .conftest import Child, child_program, last_json

PRODUCER = """
import threading
stop = {stop!r}
tracked = 0
lock = threading.Lock()
def produce():
    global tracked
    while not os.path.exists(stop):
        for event in make_events(5):
            client.track(event)
        with lock:
            tracked += 5
        time.sleep(0.1)          # two threads: a steady 100 events a second
client.start()
threads = [threading.Thread(target=produce) for _ in range(2)]
[t.start() for t in threads]; [t.join() for t in threads]
result = client.flush(timeout=120)
client.stop()
stats = client.stats()
print(json.dumps({{"tracked": tracked, "remaining": result.remaining,
                   "lost": stats["lost"], "invalid": stats["invalid"]}}), flush=True)
"""

FAULTS = [
    [ScriptedReply(status=500)] * 3,
    [ScriptedReply(delay=2.0)],  # longer than the request timeout: stored, reply too late
    [ScriptedReply(drop=True)],
    [ScriptedReply(status=429, headers={"Retry-After": "1"})],
    [ScriptedReply(status=503, headers={"Retry-After": "2"})],
    [ScriptedReply(cut_after=20, store=True)],
]


def _sample(pid: int, wal: Path) -> dict[str, int]:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {
        "rss_kib": int(fields["VmRSS"].split()[0]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"]),
        "wal_bytes": wal.stat().st_size if wal.exists() else 0,
    }


def _soak(
    seconds: float,
    server: FakeTelemetryServer,
    outbox: Path,
    tmp_path: Path,
    report: Callable[..., None],
) -> None:
    stop = tmp_path / "stop-producing"
    child = Child(
        child_program(
            server.url,
            outbox,
            PRODUCER.format(stop=str(stop)),
            submit_interval_seconds=1.0,
            batch_size=50,
            request_timeout_seconds=1.0,
            max_retries=2,
            max_queue_size=1_000_000,
        )
    )
    wal = Path(f"{outbox}-wal")
    pid = child.process.pid
    samples: list[dict[str, Any]] = []
    done = threading.Event()
    try:
        # Warm-up: the first delivery has loaded the HTTP stack and opened every connection.
        assert server.wait_for_events(50, timeout=60), child.stderr
        started = time.monotonic()
        faults = itertools.cycle(FAULTS)
        while (elapsed := time.monotonic() - started) < seconds:
            samples.append({"t": round(elapsed, 1), **_sample(pid, wal)})
            server.script(*next(faults))
            done.wait(min(2.0, max(0.0, seconds - elapsed)))
        samples.append({"t": round(time.monotonic() - started, 1), **_sample(pid, wal)})
    finally:
        stop.touch()
    assert child.finish(timeout=180) == 0, child.stderr
    result = last_json(child.lines)
    stored = {e["event_id"] for e in server.events}
    first, last = samples[0], samples[-1]
    report(
        "soak",
        seconds=seconds,
        samples=len(samples),
        tracked=result["tracked"],
        delivered=len(stored),
        lost=result["tracked"] - len(stored),
        duplicates_stored=len(server.events) - len(stored),
        start={k: first[k] for k in ("rss_kib", "fds", "threads", "wal_bytes")},
        end={k: last[k] for k in ("rss_kib", "fds", "threads", "wal_bytes")},
        max={k: max(s[k] for s in samples) for k in ("rss_kib", "fds", "threads", "wal_bytes")},
        every_tenth=[samples[i * (len(samples) - 1) // 10] for i in range(11)],
    )
    assert result["remaining"] == 0 and result["lost"] == 0 and result["invalid"] == 0
    assert len(stored) == result["tracked"] == len(server.events)
    # Flat after warm-up: in its first seconds the child may open its spool (the file, its
    # -wal and -shm: 3 descriptors) when track() meets its own worker's write lock.
    warm = samples[1] if len(samples) > 2 else first
    assert last["fds"] <= warm["fds"] + 2, samples
    assert last["threads"] <= first["threads"] + 1, samples
    assert last["rss_kib"] <= first["rss_kib"] * 1.2 + 8 * 1024, samples
    assert max(s["wal_bytes"] for s in samples) <= 8 * 1024 * 1024, samples


@pytest.mark.parametrize(
    "seconds",
    [
        pytest.param(10.0, id="short"),
        pytest.param(
            float(os.environ.get("MOSAIC_SOAK_SECONDS", "1800")),
            id="long",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_soak_with_periodic_faults_stays_flat(
    seconds: float,
    server: FakeTelemetryServer,
    outbox_path: Path,
    tmp_path: Path,
    report: Callable[..., None],
) -> None:
    """Steady tracking under rotating faults: RSS, fds, threads and WAL stay flat; all delivered."""
    _soak(seconds, server, outbox_path, tmp_path, report)
