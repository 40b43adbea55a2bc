"""Figure 5: what the SDK costs when it is not busy, each measured in a fresh process.

- import time: ``import mosaic_telemetry`` beside ``import requests``, each timed inside a
  fresh interpreter (``perf_counter`` around the import statement), alternating, median. Both
  with bytecode caches, as after ``pip install``: the children may write ``.pyc`` files (into
  a temporary ``PYTHONPYCACHEPREFIX``, so the tree stays clean) and each module is imported
  twice before timing. (With ``PYTHONDONTWRITEBYTECODE=1`` a source tree is compiled on every
  import while an installed ``requests`` is not: not a fair race.)
- idle CPU: a started client (its server in another process) sleeps for the window while
  ``time.process_time()`` counts every thread's CPU; this runs beside the other figures, as
  it only counts its own process;
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


def import_time(module: str, pycache: str) -> float:
    """Seconds to import ``module`` in a fresh interpreter."""
    code = (
        "import time; t = time.perf_counter(); import " + module + "; "
        "print(time.perf_counter() - t)"
    )
    env = {**os.environ, "PYTHONPATH": child_pythonpath(), "PYTHONPYCACHEPREFIX": pycache}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return float(proc.stdout.strip())


def import_times(rounds: int) -> dict[str, float]:
    """Median import time of ours and of requests, and the median of per-round ratios."""
    ours, theirs = [], []
    with tempfile.TemporaryDirectory(prefix="mosaic-bench-pycache-") as pycache:
        for _ in range(2):  # writes the bytecode caches
            import_time("mosaic_telemetry", pycache)
            import_time("requests", pycache)
        for _ in range(rounds):
            ours.append(import_time("mosaic_telemetry", pycache))
            theirs.append(import_time("requests", pycache))
    return {
        "ours_ms": statistics.median(ours) * 1000,
        "requests_ms": statistics.median(theirs) * 1000,
        "ratio": statistics.median(o / t for o, t in zip(ours, theirs, strict=True)),
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
def _idle_child(url: str, seconds: float) -> None:
    from common import started_client

    with tempfile.TemporaryDirectory() as folder:
        outbox = pathlib.Path(folder) / "idle.sqlite3"
        with started_client(url, outbox) as client:
            client.flush(timeout=30)  # the worker has started and built its sender
            time.sleep(0.5)
            cpu, wall = time.process_time(), time.monotonic()
            time.sleep(seconds)
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            threads = sorted(t.name for t in threading.enumerate())
    print(json.dumps({"cpu_ms": cpu * 1000, "seconds": wall, "threads": threads}))


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
    else:
        raise SystemExit(f"unknown child {kind!r}")
