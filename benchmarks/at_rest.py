"""Figure 9, kept as it was: what the SDK costs when it is not busy, each in a fresh process.

- import time: the quick start's import statement (``from mosaic_telemetry import ...,
  TelemetryClient, TelemetryConfig``) and a bare ``import mosaic_telemetry``, beside ``import
  requests``, each timed inside a fresh interpreter (``perf_counter`` around the statement),
  alternating, median of per-round ratios. All with bytecode caches, as after ``pip
  install``: the children may write ``.pyc`` files (into a temporary ``PYTHONPYCACHEPREFIX``,
  so the tree stays clean) and each statement runs twice before timing. (With
  ``PYTHONDONTWRITEBYTECODE=1`` a source tree is compiled on every import while an installed
  ``requests`` is not: not a fair race.)
- idle: a started client (its server in another process, the default 300 s interval) sleeps
  for the window; the worker thread's context switches (``/proc/self/task/<tid>/status``)
  count its wake-ups, ``time.process_time()`` every thread's CPU; this runs beside the other
  figures, as it only counts its own process;
- ``stop()`` bounded: a started client with events pending whose server accepts connections
  and never answers (its worker is stuck in a request): the wall time of ``stop()``, beside
  ``shutdown_timeout_seconds``, and the events still on disk after it;
- RSS growth: resident memory after ``count`` events went through a started client (tracked
  in chunks of 1,000, each flushed), minus after a warm-up of 2,000 events;
- threads: the threads of a process with one started client after ``count`` ``flush()``
  calls from 4 threads, minus those it had before the client.

Run as ``python benchmarks/at_rest.py import|idle|rss|threads ...`` (a child).
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from common import BENCH_DIR, child_pythonpath, run_child


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


#: What a user writes in the quick start (README), and the bare import.
QUICK_START = (
    "from mosaic_telemetry import Complexity, EventBuilder, Harness, Outcome, Provider, "
    "QualityGate, TaskType, TelemetryClient, TelemetryConfig"
)
IMPORTS = {
    "quick_start": QUICK_START,
    "bare": "import mosaic_telemetry",
    "requests": "import requests",
}


def import_time(statement: str, pycache: str) -> float:
    """Seconds to run the import ``statement`` in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), "PYTHONPYCACHEPREFIX": pycache}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return float(proc.stdout.strip())


def import_times(rounds: int) -> dict[str, dict[str, float]]:
    """Per statement: its median time (ms) and the median of per-round ratios to requests."""
    times: dict[str, list[float]] = {key: [] for key in IMPORTS}
    with tempfile.TemporaryDirectory(prefix="mosaic-bench-pycache-") as pycache:
        for _ in range(2):  # writes the bytecode caches
            for statement in IMPORTS.values():
                import_time(statement, pycache)
        for _ in range(rounds):
            for key, statement in IMPORTS.items():
                times[key].append(import_time(statement, pycache))
    theirs = times["requests"]
    return {
        key: {
            "ms": statistics.median(found) * 1000,
            "ratio": statistics.median(o / t for o, t in zip(found, theirs, strict=True)),
        }
        for key, found in times.items()
    }


def start_idle(url: str, seconds: float) -> subprocess.Popen[str]:
    """Start the idle-CPU child now; ``finish_idle`` collects it."""
    env = {**os.environ, "PYTHONPATH": child_pythonpath()}
    return subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "at_rest.py"), "idle", url, str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish_idle(proc: subprocess.Popen[str], seconds: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=seconds + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"idle child failed: {err[-2000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def stop_time(shutdown_timeout: float) -> dict[str, Any]:
    """``stop()`` of a client whose server never answers (see the module docstring)."""
    result: dict[str, Any] = run_child(
        [str(BENCH_DIR / "at_rest.py"), "stop", str(shutdown_timeout)], timeout=120
    )
    return result


def rss_growth(url: str, count: int) -> dict[str, Any]:
    result: dict[str, Any] = run_child(
        [str(BENCH_DIR / "at_rest.py"), "rss", url, str(count)], timeout=600
    )
    return result


def thread_count(url: str, flushes: int) -> dict[str, Any]:
    result: dict[str, Any] = run_child(
        [str(BENCH_DIR / "at_rest.py"), "threads", url, str(flushes)], timeout=300
    )
    return result


# --- children -------------------------------------------------------------------------------
def _switches(thread: threading.Thread) -> int | None:
    """The thread's context switches so far, or None without ``/proc``."""
    from report import parse_switches

    try:
        with open(f"/proc/self/task/{thread.native_id}/status") as status:
            return parse_switches(status.read())
    except (OSError, ValueError):
        return None


def _idle_child(url: str, seconds: float) -> None:
    from common import example_event, started_client

    with tempfile.TemporaryDirectory() as folder:
        outbox = pathlib.Path(folder) / "idle.sqlite3"
        with started_client(url, outbox) as client:
            client.track(example_event())
            client.flush(timeout=30)  # the worker has started, sent, and gone back to sleep
            time.sleep(0.5)
            workers = [t for t in threading.enumerate() if "worker" in t.name]
            before = [_switches(t) for t in workers]
            cpu, wall = time.process_time(), time.monotonic()
            time.sleep(seconds)
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            after = [_switches(t) for t in workers]
            threads = sorted(t.name for t in threading.enumerate())
    wakeups = None
    pairs = zip(after, before, strict=True)
    counted = [(a, b) for a, b in pairs if a is not None and b is not None]
    if workers and len(counted) == len(workers):
        wakeups = sum(a - b for a, b in counted)
    print(
        json.dumps(
            {
                "cpu_ms": cpu * 1000,
                "seconds": wall,
                "threads": threads,
                "workers": len(workers),
                "wakeups": wakeups,
            }
        )
    )


def _stop_child(shutdown_timeout: float) -> None:
    import socket

    from common import client_config, example_events

    from mosaic_telemetry import TelemetryClient

    with socket.socket() as hole, tempfile.TemporaryDirectory() as folder:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)  # connections complete in the backlog; nothing ever reads or answers
        url = f"http://127.0.0.1:{hole.getsockname()[1]}"
        outbox = pathlib.Path(folder) / "stop.sqlite3"
        config = client_config(url, outbox, shutdown_timeout_seconds=shutdown_timeout)
        client = TelemetryClient(config)
        for event in example_events(1000):
            client.track(event)
        client.start()
        client.flush(timeout=0.5)  # the worker is now inside a request that never ends
        started = time.monotonic()
        client.stop()
        seconds = time.monotonic() - started
        kept = TelemetryClient(config).queue_size
    print(json.dumps({"seconds": seconds, "timeout": shutdown_timeout, "kept": kept}))


def _rss_child(url: str, count: int) -> None:
    import gc

    from common import example_events, started_client

    with tempfile.TemporaryDirectory() as folder:
        outbox = pathlib.Path(folder) / "rss.sqlite3"
        with started_client(url, outbox) as client:
            for _ in range(2):
                for event in example_events(1000):
                    client.track(event)
                client.flush(timeout=60)
            gc.collect()
            before = _rss_bytes()
            for _ in range(count // 1000):
                for event in example_events(1000):
                    client.track(event)
                client.flush(timeout=60)
            gc.collect()
            after = _rss_bytes()
            stats = client.stats()
    print(
        json.dumps(
            {
                "growth_mb": (after - before) / 2**20,
                "before_mb": before / 2**20,
                "after_mb": after / 2**20,
                "delivered": stats["delivered"],
                "evicted": stats["evicted"],
            }
        )
    )


def _threads_child(url: str, flushes: int) -> None:
    from common import started_client

    before = {t.ident for t in threading.enumerate()}
    with tempfile.TemporaryDirectory() as folder:
        outbox = pathlib.Path(folder) / "threads.sqlite3"
        with started_client(url, outbox) as client:

            def flush_many() -> None:
                for _ in range(flushes // 4):
                    client.flush(timeout=30)

            callers = [threading.Thread(target=flush_many) for _ in range(4)]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join()
            added = [t.name for t in threading.enumerate() if t.ident not in before]
    workers = [name for name in added if "worker" in name]
    print(json.dumps({"added": sorted(added), "workers": len(workers), "flushes": flushes}))


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "idle":
        _idle_child(sys.argv[2], float(sys.argv[3]))
    elif kind == "rss":
        _rss_child(sys.argv[2], int(sys.argv[3]))
    elif kind == "threads":
        _threads_child(sys.argv[2], int(sys.argv[3]))
    elif kind == "stop":
        _stop_child(float(sys.argv[2]))
    else:
        raise SystemExit(f"unknown child {kind!r}")
