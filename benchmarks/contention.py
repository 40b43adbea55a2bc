"""Figure 2: ``track()`` under contention, 4 processes x 2 threads tracking into one outbox.

Each child process runs a started client (default settings, ``max_queue_size`` raised so that
nothing is evicted) on the same outbox file; their workers drain it meanwhile to one loopback
sink (``sinks.py peer``, a fast server). Each child tracks from 2 threads at a steady rate
(1,000 events/s per process, so the 4 trackers, 4 workers and the sink fit on 2 cores instead
of measuring CPU starvation) and times every call.

The baseline is the same load written the plain way: 4 processes doing autocommit ``INSERT``
into one WAL file (``sqlite3`` defaults: a 5 s busy timeout), each with a thread that deletes
the oldest 100 rows in a transaction after every 100 of its inserts, as a worker's ack does.

Run as ``python benchmarks/contention.py ours|plain PATH URL COUNT RATE START`` (a child).
"""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from common import BENCH_DIR, child_pythonpath, example_events, percentile

PROCESSES = int(os.environ.get("CONTENTION_PROCESSES", "4"))
THREADS = int(os.environ.get("CONTENTION_THREADS", "2"))  # tracking threads per process
RATE = 1000.0  # events per second per process


def _paced(calls: list[Any], call: Any, rate: float, start: float) -> list[int]:
    """Time ``call(item)`` for each item, the i-th no earlier than ``start + i / rate``."""
    clock = time.perf_counter_ns
    samples = []
    for i, item in enumerate(calls):
        delay = start + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        began = clock()
        call(item)
        samples.append(clock() - began)
    return samples


def _threaded(calls: list[Any], call: Any, rate: float, start: float) -> list[int]:
    """``_paced`` from THREADS threads, each with its share of ``calls`` and of ``rate``."""
    shares: list[list[int]] = [[] for _ in range(THREADS)]

    def run(n: int) -> None:
        shares[n] = _paced(calls[n::THREADS], call, rate / THREADS, start)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [s for share in shares for s in share]


def child(kind: str, path: str, url: str, count: int, rate: float, start: float) -> None:
    from mosaic_telemetry._wire.events import event_to_json

    events = example_events(count)
    extra: dict[str, Any] = {}
    if kind == "ours":
        from common import started_client

        with started_client(url, pathlib.Path(path), max_queue_size=1_000_000) as client:
            samples = _threaded(events, client.track, rate, start)
            client.flush(timeout=60)
            stats = client.stats()
        extra = {k: stats[k] for k in ("handed_off", "lost", "delivered")}
    else:
        local = threading.local()

        def connection() -> sqlite3.Connection:
            conn: sqlite3.Connection | None = getattr(local, "conn", None)
            if conn is None:  # one per thread, as the SDK has
                conn = local.conn = sqlite3.connect(path, isolation_level=None)
                conn.execute("PRAGMA journal_mode = WAL").fetchall()
                conn.execute("PRAGMA synchronous = NORMAL")
            return conn

        lock = threading.Lock()
        drain = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        wake = threading.Semaphore(0)
        done = threading.Event()

        def drainer() -> None:
            while not done.is_set():
                if wake.acquire(timeout=0.1):
                    drain.execute("BEGIN IMMEDIATE")
                    drain.execute(
                        "DELETE FROM events"
                        " WHERE id IN (SELECT id FROM events ORDER BY id LIMIT 100)"
                    )
                    drain.execute("COMMIT")

        thread = threading.Thread(target=drainer)
        thread.start()
        sql = "INSERT INTO events (body) VALUES (?)"
        texts = [event_to_json(e) for e in events]
        tracked = [0]

        def insert(text: str) -> None:
            connection().execute(sql, (text,))
            with lock:
                tracked[0] += 1
                if tracked[0] % 100 == 0:
                    wake.release()

        samples = _threaded(texts, insert, rate, start)
        done.set()
        thread.join()
    print(json.dumps({"samples": samples, **extra}))


def _create_plain(path: pathlib.Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    conn.close()


def run_round(kind: str, folder: pathlib.Path, url: str, count: int) -> dict[str, float]:
    """One round: 4 children at once; p50/p99/max over all their calls, in microseconds."""
    path = folder / f"{kind}-{time.monotonic_ns()}.sqlite3"
    if kind == "plain":
        _create_plain(path)
    start = time.time() + 3.0  # every child has imported and opened the file by then
    env = {**os.environ, "PYTHONPATH": child_pythonpath()}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(BENCH_DIR / "contention.py"),
                kind,
                str(path),
                url,
                str(count),
                str(RATE),
                repr(start),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(PROCESSES)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120 + count / RATE)
        if proc.returncode != 0:
            raise RuntimeError(f"contention child failed: {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    samples = [s for r in results for s in r["samples"]]
    return {
        "median": statistics.median(samples) / 1000,
        "p99": percentile(samples, 0.99) / 1000,
        "max": max(samples) / 1000,
        "handed_off": float(sum(r.get("handed_off", 0) for r in results)),
        "lost": float(sum(r.get("lost", 0) for r in results)),
        "calls": float(len(samples)),
    }


if __name__ == "__main__":
    kind, path, url, count, rate, start = sys.argv[1:7]
    child(kind, path, url, int(count), float(rate), float(start))
