"""Scenario 14: the FastAPI example under real app servers, telemetry to ``mosaic-telemetry serve``.

``docs/examples/fastapi_app.py`` runs under ``uvicorn --workers 2`` and under ``gunicorn -k
uvicorn.workers.UvicornWorker --preload -w 2`` (a client built in the preloading parent, two
forked workers sharing one outbox file). The telemetry server is ``mosaic-telemetry serve`` in
a third process. The test sends HTTP requests to the app, each tracking one event, then
SIGTERMs the app server: every event must reach the server exactly once (no loss on shutdown,
no double send by the two workers). Every wait is for a line a process prints or for its exit.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from ..helpers import API_KEY, INSTANCE_ID, child_env

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = ROOT / "docs" / "examples"
REPORT = {
    "task_type": "implementation",
    "model": "claude-sonnet-4-5-20250929",
    "provider": "anthropic",
    "complexity": "medium",
    "outcome": "success",
    "duration_ms": 4000,
    "input_tokens": 1200,
    "output_tokens": 300,
    "cost_usd_micros": 9000,
    "gates_passed": True,
}
_ACCEPTED = re.compile(r"  202 .*\baccepted (\d+)")


class Process:
    """A child process whose stdout and stderr lines are collected by reader threads."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.popen = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.popen.stdout, self.popen.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 120.0) -> bool:
        """Block until ``predicate(lines)`` holds; False when the process ended first."""
        with self._changed:
            return self._changed.wait_for(
                lambda: predicate(self.lines) or self.popen.poll() is not None, timeout
            ) and predicate(self.lines)

    def finish(self, timeout: float = 120.0) -> int:
        """Wait for the exit and the last lines; the exit code."""
        code = self.popen.wait(timeout)
        for reader in self._readers:
            reader.join(10)
        return code

    def text(self) -> str:
        """Everything printed so far."""
        with self._changed:
            return "\n".join(self.lines)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Processes the test started; any still running at the end is killed."""
    started: list[Process] = []
    yield started
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait(10)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def app_server(kind: str, port: int) -> list[str]:
    """The command line that serves the FastAPI example with two workers."""
    bind = ["--host", "127.0.0.1", "--port", str(port)]
    if kind == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--workers", "2", *bind]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "uvicorn.workers.UvicornWorker",
        "--preload",
        "-w",
        "2",
        "-b",
        f"127.0.0.1:{port}",
        "fastapi_app:app",
    ]


@pytest.mark.parametrize(
    "requests_sent", [40, pytest.param(200, marks=pytest.mark.slow)], ids=["short", "long"]
)
@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_app_server_delivers_every_event_once(
    kind: str,
    requests_sent: int,
    tmp_path: Path,
    processes: list[Process],
    report: Callable[..., None],
) -> None:
    """N requests to the app under two workers, then SIGTERM: the server stored N events,
    each accepted once, none sent twice."""
    pytest.importorskip("uvicorn")
    if kind == "gunicorn":
        pytest.importorskip("gunicorn")
    env = child_env()
    telemetry = Process([sys.executable, "-m", "mosaic_telemetry", "serve"], env, ROOT)
    processes.append(telemetry)
    assert telemetry.wait_for(lambda lines: any("listening on" in x for x in lines)), (
        telemetry.text()
    )
    url = next(x for x in telemetry.lines if "listening on" in x).split()[2]
    env.update(
        MOSAIC_TELEMETRY_SERVER_URL=url,
        MOSAIC_TELEMETRY_API_KEY=API_KEY,
        MOSAIC_TELEMETRY_INSTANCE_ID=INSTANCE_ID,
        MOSAIC_TELEMETRY_OUTBOX_PATH=str(tmp_path / "outbox.sqlite3"),
    )
    port = free_port()
    app = Process(app_server(kind, port), env, EXAMPLES)
    processes.append(app)
    assert app.wait_for(
        lambda lines: sum("Application startup complete" in x for x in lines) >= 2
    ), app.text()

    ids = []
    with requests.Session() as session:
        for _ in range(requests_sent):
            reply = session.post(f"http://127.0.0.1:{port}/tasks/complete", json=REPORT, timeout=30)
            assert reply.status_code == 200, reply.text
            ids.append(reply.json()["event_id"])
    app.popen.send_signal(signal.SIGTERM)
    app_code = app.finish()
    stored = requests.get(url + "/_fake/events", timeout=30).json()
    telemetry.popen.send_signal(signal.SIGTERM)
    assert telemetry.finish() == 0

    batches = [x for x in telemetry.lines if "POST /v1/events/batch" in x]
    accepted = sum(int(m.group(1)) for x in batches if (m := _ACCEPTED.search(x)))
    report(
        "app-servers",
        server=kind,
        requests=requests_sent,
        stored=len(stored),
        batches=len(batches),
        accepted=accepted,
        app_exit=app_code,
    )
    assert app_code == 0, app.text()
    assert len(set(ids)) == requests_sent
    assert sorted(e["event_id"] for e in stored) == sorted(ids)
    assert accepted == requests_sent, "\n".join(batches)
    assert not [x for x in batches if "duplicate" in x], "\n".join(batches)
