"""Fixtures of the reliability suite: child programs, and figures written where they are asked.

Every scenario records its figures with the ``report`` fixture: printed (see them with ``-s``)
and, when ``MOSAIC_RELIABILITY_REPORT`` names a file, appended to it as one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..helpers import API_KEY, INSTANCE_ID, child_env

ROOT = Path(__file__).resolve().parent.parent.parent

PRELUDE = """\
import json, logging, os, sys, threading, time
logging.basicConfig(level=logging.WARNING)  # the SDK's warnings on stderr, where tests read them
from tests.helpers import API_KEY, INSTANCE_ID, make_event, make_events
from mosaic_telemetry import TelemetryClient, TelemetryConfig
config = TelemetryConfig(**{config!r})
client = TelemetryClient(config)
"""


def child_program(server_url: str, outbox: Path, body: str, **overrides: Any) -> str:
    """A program that builds ``client`` on ``outbox`` for ``server_url``, then runs ``body``."""
    config: dict[str, Any] = {
        "server_url": server_url,
        "api_key": API_KEY,
        "instance_id": INSTANCE_ID,
        "outbox_path": str(outbox),
        "submit_interval_seconds": 3600.0,
        "request_timeout_seconds": 5.0,
        "shutdown_timeout_seconds": 5.0,
    }
    config.update(overrides)
    return PRELUDE.format(config=config) + textwrap.dedent(body)


#: Children started by the current test; the autouse fixture below kills any still running.
_RUNNING: list[subprocess.Popen[str]] = []


class Child:
    """A running child program whose stdout lines are collected by a reader thread."""

    def __init__(self, program: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", program],
            stdin=subprocess.PIPE,  # say() writes to it; finish() and kill() close it
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**child_env(), **(env or {})},
            cwd=ROOT,
        )
        _RUNNING.append(self.process)
        self.lines: list[str] = []
        self.stderr = ""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_err(self) -> None:
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 30.0) -> bool:
        """Block until a line satisfying ``predicate`` was printed; False on timeout or exit."""
        with self._changed:
            return self._changed.wait_for(
                lambda: any(predicate(line) for line in self.lines) or not self._reader.is_alive(),
                timeout,
            ) and any(predicate(line) for line in self.lines)

    def wait_for_lines(self, count: int, timeout: float = 30.0) -> bool:
        """Block until ``count`` lines were printed; False on timeout or exit."""
        with self._changed:
            return (
                self._changed.wait_for(
                    lambda: len(self.lines) >= count or not self._reader.is_alive(), timeout
                )
                and len(self.lines) >= count
            )

    def say(self, line: str) -> None:
        """Write one line to the child's stdin (a child waits on it with sys.stdin.readline())."""
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = 120.0) -> int:
        """Wait for the exit; the exit code (negative: killed by that signal)."""
        code = self.process.wait(timeout=timeout)
        if self.process.stdin is not None:
            self.process.stdin.close()
        self._reader.join(10)
        self._err_reader.join(10)
        return code

    def kill(self) -> None:
        """SIGKILL the child and collect what it printed."""
        self.process.kill()
        self.finish()


def run_program(program: str, timeout: float = 120.0) -> list[str]:
    """Run a child program to completion; its stdout lines (the test fails on a non-zero exit)."""
    child = Child(program)
    code = child.finish(timeout)
    assert code == 0, child.stderr
    return child.lines


def last_json(lines: list[str]) -> dict[str, Any]:
    """The last line of ``lines`` that is a JSON object."""
    for line in reversed(lines):
        if line.startswith("{"):
            value: dict[str, Any] = json.loads(line)
            return value
    raise AssertionError(f"no JSON line in {lines[-5:]!r}")


@pytest.fixture(autouse=True)
def _no_child_outlives_its_test() -> Iterator[None]:
    """A test that fails half-way (a drainer waiting for its stop file) leaves no process."""
    yield
    while _RUNNING:
        process = _RUNNING.pop()
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """Record a scenario's figures: printed, and appended to $MOSAIC_RELIABILITY_REPORT."""
    recorded: list[dict[str, Any]] = []

    def record(scenario: str, **figures: Any) -> None:
        line = {"scenario": scenario, "test": request.node.nodeid, **figures}
        recorded.append(line)
        print("FIGURES", json.dumps(line, sort_keys=True))

    yield record
    target = os.environ.get("MOSAIC_RELIABILITY_REPORT")
    if target and recorded:
        with open(target, "a", encoding="utf-8") as out:
            for line in recorded:
                out.write(json.dumps(line, sort_keys=True) + "\n")


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds passed (False)."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def inject_invalid(outbox: Path, count: int) -> list[str]:
    """Insert ``count`` events the server refuses (empty model) straight into the outbox file.

    They stand for rows written by an older SDK with laxer rules: the only way a valid SDK
    ever sends an event the server rejects for its content.
    """
    import sqlite3
    import time

    from mosaic_telemetry._store.schema import SQL_ADD
    from mosaic_telemetry._wire.events import event_to_dict

    from ..helpers import make_event

    ids = []
    with sqlite3.connect(outbox, timeout=10) as db:
        for _ in range(count):
            body = event_to_dict(make_event())
            body["model"] = ""
            # The outbox's own INSERT: a bare one reuses an id below removed_max_id once the
            # worker has emptied the table, and the O(1) pending count then goes negative.
            db.execute(SQL_ADD, (body["event_id"], json.dumps(body), time.time()))
            ids.append(body["event_id"])
    return ids


def dead_ids(outbox: Path) -> set[str]:
    """Event ids in the outbox's dead-letter table."""
    import sqlite3

    with sqlite3.connect(outbox, timeout=10) as db:
        return {row[0] for row in db.execute("SELECT event_id FROM dead")}
