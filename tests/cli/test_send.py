"""``send``: the normal worker draining the outbox once, or following it until SIGTERM/SIGINT."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mosaic_telemetry import TelemetryClient, TelemetryConfig
from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from ..helpers import API_KEY, INSTANCE_ID, child_env, make_events
from .support import run
from .test_track import FLAGS

#: How long a guard waits for a child beyond the bound under test (a loaded 2-core machine).
SLACK = 30.0


def pending_ids(path: Path) -> list[str]:
    """The event ids still in the outbox file."""
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT event_id FROM events")]


def track_into(path: Path, count: int) -> list[str]:
    """Track ``count`` events into the outbox at ``path`` with a client that never sends."""
    client = TelemetryClient(TelemetryConfig(outbox_path=path))
    events = make_events(count)
    for event in events:
        client.track(event)
    client.stop()
    return [str(event.event_id) for event in events]


def cli_env(server: FakeTelemetryServer, outbox: Path) -> dict[str, str]:
    """The environment of a child `python -m mosaic_telemetry` using this tree and server."""
    return {
        **child_env(),
        "MOSAIC_TELEMETRY_SERVER_URL": server.url,
        "MOSAIC_TELEMETRY_API_KEY": API_KEY,
        "MOSAIC_TELEMETRY_INSTANCE_ID": INSTANCE_ID,
        "MOSAIC_TELEMETRY_OUTBOX_PATH": str(outbox),
    }


class Follower:
    """A `send --follow` child (or ``argv``); ``ready()`` waits until it logged that it runs."""

    def __init__(self, env: dict[str, str], *extra: str, argv: list[str] | None = None) -> None:
        command = argv or [sys.executable, "-m", "mosaic_telemetry", "send", "--follow"]
        self.proc = subprocess.Popen(
            [*command, *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.first_line = ""  # what it logged up to "... until SIGTERM or SIGINT"

    def ready(self) -> None:
        """Block until it logged that it runs (its signals are blocked for sigwait by then)."""
        assert self.proc.stderr is not None
        while "until SIGTERM or SIGINT" not in self.first_line:
            line = self.proc.stderr.readline()
            assert line, f"it ended before it ran: {self.first_line}"
            self.first_line += line

    def stop(self, signum: int, bound: float) -> tuple[int, str]:
        """Send ``signum`` to the running child; its exit code and the rest of its stderr."""
        assert self.proc.poll() is None, "it ended before the signal"
        self.proc.send_signal(signum)
        _out, err = self.proc.communicate(timeout=bound + SLACK)  # a guard, not the claim
        return self.proc.returncode, err


@pytest.fixture
def followers() -> Iterator[list[Follower]]:
    """Children of the test, killed if a test left one running."""
    made: list[Follower] = []
    yield made
    for follower in made:
        if follower.proc.poll() is None:
            follower.proc.kill()
            follower.proc.wait()


# --- one drain ----------------------------------------------------------------------------------
def test_send_drains_once_with_one_log_line_per_batch(
    env: Path, server: FakeTelemetryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """250 events go out in batches of 100; stderr shows an INFO line for each batch."""
    ids = track_into(env, 250)
    code, text = run("send")
    err = capsys.readouterr().err
    assert (code, text) == (0, "delivered 250, remaining 0, dead 0\n")
    assert sorted(e["event_id"] for e in server.events) == sorted(ids)
    batches = [line for line in err.splitlines() if " INFO sent a batch of " in line]
    assert [line.split("sent a batch of ")[1].split()[0] for line in batches] == [
        "100",
        "100",
        "50",
    ]
    assert API_KEY not in err


def test_send_json_summary(env: Path, server: FakeTelemetryServer) -> None:
    """--json prints one object with the final counts."""
    track_into(env, 3)
    code, text = run("send", "--json")
    assert code == 0
    assert json.loads(text) == {
        "delivered": 3,
        "duplicates": 0,
        "dead_lettered": 0,
        "remaining": 0,
        "timed_out": False,
    }


def test_send_without_an_outbox_has_nothing_to_do(
    env: Path, server: FakeTelemetryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """No file yet (nothing was ever tracked): exit 0, no file created, no request."""
    assert run("send") == (0, "")
    assert "nothing to send" in capsys.readouterr().err
    assert not env.exists() and server.requests == []


def test_send_honours_the_shared_retry_after_pause(
    env: Path, server: FakeTelemetryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 429 with Retry-After pauses every process: the next send asks nothing and says why."""
    ids = track_into(env, 2)
    server.script(ScriptedReply(status=429, headers={"Retry-After": "600"}))
    assert run("send")[0] == 1
    assert len(server.requests) == 1
    capsys.readouterr()
    code, text = run("send")
    assert (code, text) == (1, "delivered 0, remaining 2, dead 0\n")
    assert "the server asked to wait until" in capsys.readouterr().err
    assert len(server.requests) == 1
    assert sorted(pending_ids(env)) == sorted(ids)


@pytest.mark.parametrize("variable", ["MOSAIC_TELEMETRY_DRY_RUN", "MOSAIC_TELEMETRY_ENABLED"])
def test_send_refuses_dry_run_and_disabled(
    variable: str,
    env: Path,
    server: FakeTelemetryServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A sender that would send nothing says so and exits 1."""
    track_into(env, 1)
    monkeypatch.setenv(variable, "true" if variable.endswith("DRY_RUN") else "false")
    assert run("send")[0] == 1
    assert "no sending" in capsys.readouterr().err
    assert server.requests == []


# --- follow -------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_follow_sends_what_others_track_and_exits_0_on_a_signal(
    signum: int,
    server: FakeTelemetryServer,
    outbox_path: Path,
    followers: list[Follower],
) -> None:
    """Events tracked by other processes while it runs are sent; the signal ends it with 0."""
    follower = Follower(cli_env(server, outbox_path), "--interval", "0.2")
    followers.append(follower)
    follower.ready()
    ids = track_into(outbox_path, 3)
    assert server.wait_for_events(3, timeout=SLACK)
    code, err = follower.stop(signum, bound=5.0)
    assert code == 0, err
    assert f"{signal.Signals(signum).name}: stopping" in err
    assert sorted(e["event_id"] for e in server.events) == sorted(ids)
    assert "sent a batch of 3 events" in err
    assert pending_ids(outbox_path) == []


def test_follow_stops_within_the_shutdown_timeout_while_the_server_hangs(
    server: FakeTelemetryServer, outbox_path: Path, followers: list[Follower]
) -> None:
    """Mid-request to a server that never answers, SIGTERM still ends it (exit 0), event kept."""
    server.script(ScriptedReply(hang=True))
    follower = Follower(
        cli_env(server, outbox_path), "--interval", "0.2", "--shutdown-timeout", "1"
    )
    followers.append(follower)
    follower.ready()
    (event_id,) = track_into(outbox_path, 1)
    assert server.wait_for_requests(1, timeout=SLACK)  # the worker now waits on the reply
    code, err = follower.stop(signal.SIGTERM, bound=1.0)
    assert code == 0, err
    assert "SIGTERM: stopping (within 1 s)" in err
    assert pending_ids(outbox_path) == [event_id]  # not delivered, not lost


# --- the shell path -----------------------------------------------------------------------------
def test_fifty_parallel_tracks_then_the_sender_delivers_each_once(
    server: FakeTelemetryServer, outbox_path: Path
) -> None:
    """50 `track` processes at once into one outbox; one `send` delivers all 50, each once."""
    env = cli_env(server, outbox_path)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mosaic_telemetry",
                "track",
                *FLAGS,
                "--retry-count",
                str(n % 20),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(50)
    ]
    results = [(proc.communicate(timeout=300), proc.returncode) for proc in procs]
    assert [code for _, code in results] == [0] * 50, [err for (_, err), _ in results if err]
    printed = sorted(out.strip() for (out, _), _ in results)
    assert len(set(printed)) == 50 and all(uuid.UUID(text) for text in printed)
    assert server.requests == []  # track sends nothing
    done = subprocess.run(
        [sys.executable, "-m", "mosaic_telemetry", "send"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(e["event_id"] for e in server.events) == printed
    assert sorted(server.event_ids_received) == printed  # each sent exactly once
    assert pending_ids(outbox_path) == []


def test_two_followers_on_one_outbox_send_each_event_once(
    server: FakeTelemetryServer, outbox_path: Path, followers: list[Follower]
) -> None:
    """Two senders (a sidecar restarted next to the old one, say) share the file via leases."""
    env = cli_env(server, outbox_path)
    for _ in range(2):
        followers.append(Follower(env, "--interval", "0.1"))
    for follower in followers:
        follower.ready()
    ids = track_into(outbox_path, 300)
    assert server.wait_for_events(300, timeout=SLACK)
    for follower in followers:
        assert follower.stop(signal.SIGTERM, bound=5.0)[0] == 0
    assert sorted(server.event_ids_received) == sorted(ids)
    assert server.duplicates_received == 0


def test_one_event_tracked_by_a_child_is_on_disk_when_track_returns(
    server: FakeTelemetryServer, outbox_path: Path
) -> None:
    """`track` returns after the commit: the row is there for another connection at once."""
    done = subprocess.run(
        [sys.executable, "-m", "mosaic_telemetry", "track", *FLAGS],
        env=cli_env(server, outbox_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert pending_ids(outbox_path) == [done.stdout.strip()]
