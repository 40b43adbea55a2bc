"""Shared pieces of the benchmarks: the example event, timing, statistics, sinks, peers.

Every figure is measured in the same run as its baseline, in rounds, and reported as the
median over the rounds; ratios are taken per round (measured back to back) and their median
is reported, so a noisy neighbour slows both sides of a ratio instead of skewing it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
if str(ROOT) not in sys.path:  # measure this source tree, installed or not
    sys.path.insert(0, str(ROOT))

from mosaic_telemetry import TaskCompletionEvent as TaskCompletionEvent  # noqa: E402
from mosaic_telemetry import TelemetryClient as TelemetryClient  # noqa: E402
from mosaic_telemetry import TelemetryConfig  # noqa: E402
from mosaic_telemetry.testing import example_event_builder as example_event_builder  # noqa: E402

API_KEY = "ab" * 32
INSTANCE_ID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
#: The peers are optional: each is measured when importable, else reported as skipped.
PEERS = {
    "persist-queue": "persistqueue",
    "posthog": "posthog",
    "segment-analytics-python": "segment.analytics",
}


def example_event() -> TaskCompletionEvent:
    """The upstream README's example event (a fresh event_id and timestamp each call)."""
    return example_event_builder(INSTANCE_ID).build()


def example_events(count: int) -> list[TaskCompletionEvent]:
    """``count`` example events with distinct ids."""
    return [example_event() for _ in range(count)]


def client_config(url: str, outbox: pathlib.Path, **overrides: Any) -> TelemetryConfig:
    """The default configuration, pointed at ``url`` with its outbox at ``outbox``."""
    values: dict[str, Any] = {
        "server_url": url,
        "api_key": API_KEY,
        "instance_id": INSTANCE_ID,
        "outbox_path": str(outbox),
    }
    values.update(overrides)
    return TelemetryConfig(**values)


@contextlib.contextmanager
def started_client(url: str, outbox: pathlib.Path, **overrides: Any) -> Iterator[TelemetryClient]:
    """A started client with default settings; stopped (and its outbox closed) on exit."""
    client = TelemetryClient(client_config(url, outbox, **overrides))
    client.start()
    try:
        yield client
    finally:
        client.stop()


# --- timing and statistics -------------------------------------------------------------------
def time_each(call: Callable[[Any], object], items: Sequence[Any]) -> list[int]:
    """Nanoseconds of ``call(item)`` for each item, one ``perf_counter_ns`` pair per call."""
    clock = time.perf_counter_ns
    samples = [0] * len(items)
    for i, item in enumerate(items):
        start = clock()
        call(item)
        samples[i] = clock() - start
    return samples


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of unsorted samples."""
    ordered = sorted(samples)
    rank = math.ceil(fraction * len(ordered) - 1e-9)  # 1-based; the epsilon absorbs 0.07*100
    return ordered[min(len(ordered), max(rank, 1)) - 1]


def summary(samples_ns: Sequence[int]) -> dict[str, float]:
    """Median, p99 and max of one round, in microseconds."""
    ordered = sorted(samples_ns)
    return {
        "median": statistics.median(ordered) / 1000,
        "p99": percentile(ordered, 0.99) / 1000,
        "max": ordered[-1] / 1000,
        "n": float(len(ordered)),
    }


def median_of(rounds: Sequence[dict[str, float]], key: str) -> float:
    """The median over rounds of one statistic."""
    return statistics.median(r[key] for r in rounds)


def ratio_of(ours: Sequence[dict[str, float]], base: Sequence[dict[str, float]], key: str) -> float:
    """The median over rounds of ``ours[key] / base[key]``, each pair measured back to back."""
    return statistics.median(o[key] / b[key] for o, b in zip(ours, base, strict=True) if b[key])


def temp_dir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary directory on the default temp file system (local disk here)."""
    return tempfile.TemporaryDirectory(prefix=f"mosaic-bench-{prefix}-")


# --- peers --------------------------------------------------------------------------------------
def peer_version(distribution: str) -> str | None:
    """The installed version of a peer, or None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def peer_available(distribution: str) -> bool:
    """Whether the peer can be imported."""
    if peer_version(distribution) is None:
        return False
    try:
        __import__(PEERS[distribution])
    except ImportError:
        return False
    return True


# --- sinks: HTTP servers on 127.0.0.1 in a child process ------------------------------------
class Sink:
    """A loopback HTTP server in a child process (``sinks.py``), so it never takes our GIL.

    ``kind="fake"`` is ``mosaic_telemetry.testing.FakeTelemetryServer`` (wire-v1, validates
    every event); ``kind="peer"`` answers 200 ``{}`` to any POST and counts the events of
    PostHog and Segment batches.
    """

    def __init__(self, kind: str) -> None:
        env = dict(os.environ, PYTHONPATH=child_pythonpath())
        self._proc = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "sinks.py"), kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            self._proc.kill()
            raise RuntimeError(f"sink {kind} did not start: {line!r}")
        self.url = line

    def _ask(self, command: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return self._proc.stdout.readline().strip()

    def count(self) -> int:
        """Events the sink has received (peer sink) or stored (fake server) so far."""
        return int(self._ask("count"))

    def reset(self) -> None:
        """Forget what was received (the fake server keeps every event in memory)."""
        self._ask("reset")

    def hold(self) -> None:
        """Peer sink: read requests but reply to none until :meth:`release`."""
        self._ask("hold")

    def release(self) -> None:
        """Peer sink: reply again, to the held requests first."""
        self._ask("release")

    def close(self) -> None:
        """Stop the child process."""
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def child_pythonpath() -> str:
    """PYTHONPATH for child processes: this source tree first."""
    extra = os.environ.get("PYTHONPATH", "")
    return str(ROOT) + (os.pathsep + extra if extra else "")


def run_child(args: Sequence[str], timeout: float) -> Any:
    """Run ``python benchmarks/<args>`` and return the JSON it prints on its last line."""
    env = dict(os.environ, PYTHONPATH=child_pythonpath())
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
