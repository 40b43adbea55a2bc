"""The recipes of docs/agents.md run for real: the hook script, the systemd unit, the sidecar."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry.testing import FakeTelemetryServer

from .test_send import SLACK, Follower, cli_env, pending_ids

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "agents.md").read_text()
HOOK = ROOT / "docs" / "examples" / "agent_hook.sh"
#: What `claude -p ... --output-format json` prints at the end of a run (the keys the hook reads).
SUMMARY: dict[str, Any] = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "duration_ms": 48210,
    "num_turns": 12,
    "result": "Fixed the failing test.",
    "session_id": "3f9c",
    "total_cost_usd": 0.9192,
    "usage": {
        "input_tokens": 2340,
        "cache_creation_input_tokens": 10000,
        "cache_read_input_tokens": 100000,
        "output_tokens": 38760,
    },
    "modelUsage": {"claude-sonnet-4-5-20250929": {"inputTokens": 2340}},
}


def blocks(language: str) -> list[str]:
    """The ```language blocks of docs/agents.md, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", PAGE, re.MULTILINE | re.DOTALL)


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A PATH entry with `mosaic-telemetry` (this source tree) and `python3` (this Python)."""
    directory = tmp_path / "bin"
    directory.mkdir()
    wrapper = directory / "mosaic-telemetry"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mosaic_telemetry "$@"\n')
    wrapper.chmod(0o755)
    (directory / "python3").symlink_to(sys.executable)
    return directory


def shell_env(server: FakeTelemetryServer, outbox: Path, bin_dir: Path) -> dict[str, str]:
    """A hook's environment: the settings, and our `mosaic-telemetry` first on PATH."""
    env = cli_env(server, outbox)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_hook(env: dict[str, str], summary: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run the documented hook script with ``sh`` on ``summary``."""
    return subprocess.run(
        ["sh", str(HOOK), str(summary)],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- the hook -----------------------------------------------------------------------------------
def test_the_page_shows_the_hook_script_as_it_is() -> None:
    """The ```sh block of the page is the file the test runs, byte for byte."""
    assert HOOK.read_text() in blocks("sh")


def test_hook_turns_the_agent_summary_into_one_tracked_event(
    server: FakeTelemetryServer, outbox_path: Path, bin_dir: Path, tmp_path: Path
) -> None:
    """Two runs (gate failing, gate passing) give two events mapped from the summary."""
    summary = tmp_path / "result.json"
    summary.write_text(json.dumps(SUMMARY))
    env = shell_env(server, outbox_path, bin_dir)
    failing = run_hook(env, summary, TASK_TYPE="debugging", TASK_GATE_COMMAND="exit 1")
    passing = run_hook(env, summary, TASK_GATE_COMMAND="true")
    assert (failing.returncode, passing.returncode) == (0, 0), failing.stderr + passing.stderr
    assert server.requests == []  # the hook only writes
    done = subprocess.run(
        ["mosaic-telemetry", "send"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    events = {e["event_id"]: e for e in server.events}
    bad, good = events[failing.stdout.strip()], events[passing.stdout.strip()]
    assert {k: good[k] for k in good if k in MAPPED} == MAPPED
    assert (bad["task_type"], bad["quality_gate_passed"], bad["quality_gates_failed"]) == (
        "debugging",
        False,
        ["test"],
    )
    assert (good["quality_gate_passed"], good["quality_gates_run"]) == (True, ["test"])


MAPPED = {
    "task_type": "implementation",
    "model": "claude-sonnet-4-5-20250929",
    "provider": "anthropic",
    "harness": "claude_code",
    "outcome": "success",
    "task_duration_ms": 48210,
    "actual_input_tokens": 112340,
    "actual_output_tokens": 38760,
    "actual_cost_usd_micros": 919200,
}


def test_hook_reads_the_summary_from_a_pipe_and_maps_errors(
    server: FakeTelemetryServer, outbox_path: Path, bin_dir: Path
) -> None:
    """`... | agent_hook.sh`: an agent run that hit its turn limit is a partial outcome."""
    summary = {**SUMMARY, "is_error": True, "subtype": "error_max_turns"}
    done = subprocess.run(
        ["sh", str(HOOK)],
        input=json.dumps(summary),
        env=shell_env(server, outbox_path, bin_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert pending_ids(outbox_path) == [done.stdout.strip()]


def test_hook_with_an_unreadable_summary_fails_and_writes_nothing(
    server: FakeTelemetryServer, outbox_path: Path, bin_dir: Path, tmp_path: Path
) -> None:
    """A summary that is not JSON: the hook exits non-zero and the outbox is not created."""
    summary = tmp_path / "result.json"
    summary.write_text("Error: out of credits\n")
    done = run_hook(shell_env(server, outbox_path, bin_dir), summary)
    assert done.returncode == 2
    assert "stdin: empty" in done.stderr
    assert not outbox_path.exists()


# --- systemd ------------------------------------------------------------------------------------
def _ini(text: str) -> dict[str, list[str]]:
    """``key -> values`` of a systemd unit or env file (sections flattened, order kept)."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_systemd_unit_verifies_and_its_exec_start_stops_cleanly_on_its_kill_signal(
    server: FakeTelemetryServer, tmp_path: Path, bin_dir: Path
) -> None:
    """`systemd-analyze verify` accepts the unit; its ExecStart runs and exits 0 on KillSignal."""
    unit_text, env_text = [b for b in blocks("ini") if "[Service]" in b or "MOSAIC_" in b][:2]
    unit, env_file = _ini(unit_text), _ini(env_text)
    argv = unit["ExecStart"][0].split()
    assert Path(argv[0]).name == "mosaic-telemetry" and argv[1:3] == ["send", "--follow"]
    stop_seconds = float(unit["TimeoutStopSec"][0])
    shutdown = float(argv[argv.index("--shutdown-timeout") + 1])
    assert shutdown < stop_seconds  # systemd never needs its SIGKILL
    local = unit_text.replace(argv[0], str(bin_dir / "mosaic-telemetry"))
    unit_file = tmp_path / "mosaic-telemetry-sender.service"
    unit_file.write_text(local)
    verifier = shutil.which("systemd-analyze")
    if verifier is not None:
        done = subprocess.run(
            [verifier, "verify", str(unit_file)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
    outbox = tmp_path / "state" / Path(env_file["MOSAIC_TELEMETRY_OUTBOX_PATH"][0]).name
    assert set(env_file) == {
        "MOSAIC_TELEMETRY_SERVER_URL",
        "MOSAIC_TELEMETRY_API_KEY",
        "MOSAIC_TELEMETRY_INSTANCE_ID",
        "MOSAIC_TELEMETRY_OUTBOX_PATH",
    }
    env = shell_env(server, outbox, bin_dir)  # the same four, pointing at the test server
    sender = Follower(env, argv=[str(bin_dir / "mosaic-telemetry"), *argv[1:]])
    try:
        sender.ready()
        _track_with_hook(env, tmp_path, count=2)
        assert server.wait_for_events(2, timeout=SLACK)
        kill_signal = signal.Signals[unit["KillSignal"][0]]
        code, err = sender.stop(kill_signal, bound=stop_seconds)
    finally:
        if sender.proc.poll() is None:
            sender.proc.kill()
            sender.proc.wait()
    assert code == 0, err
    assert pending_ids(outbox) == []


def _track_with_hook(env: dict[str, str], tmp_path: Path, count: int) -> list[str]:
    summary = tmp_path / "result.json"
    summary.write_text(json.dumps(SUMMARY))
    ids = []
    for _ in range(count):
        done = run_hook(env, summary)
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    return ids


# --- the sidecar --------------------------------------------------------------------------------
def _service(compose: str, name: str) -> str:
    """The text of one service of the compose file (up to the next service or section)."""
    match = re.search(rf"^  {name}:\n(.*?)(?=^  \S|^\S|\Z)", compose, re.MULTILINE | re.DOTALL)
    assert match, name
    return match.group(1)


def test_sidecar_shares_the_outbox_volume_and_delivers_what_the_agent_tracks(
    server: FakeTelemetryServer, tmp_path: Path, bin_dir: Path
) -> None:
    """Agent and sender as two processes on one directory: hooks track, the sidecar sends."""
    (compose,) = blocks("yaml")
    agent, sidecar = _service(compose, "agent"), _service(compose, "telemetry-sender")
    mount = "- telemetry:/var/lib/mosaic-telemetry"
    assert mount in agent and mount in sidecar
    assert "environment: &telemetry" in agent and "environment: *telemetry" in sidecar
    outbox_setting = re.search(r"MOSAIC_TELEMETRY_OUTBOX_PATH: (\S+)", agent)
    assert outbox_setting and outbox_setting.group(1).startswith("/var/lib/mosaic-telemetry/")
    command_line = re.search(r"command: (\[.*\])", sidecar)
    assert command_line
    command = json.loads(command_line.group(1))
    grace = re.search(r"stop_grace_period: (\d+)s", sidecar)
    assert grace and float(command[command.index("--shutdown-timeout") + 1]) < int(grace.group(1))
    volume = tmp_path / "telemetry"  # the shared volume
    volume.mkdir()
    env = shell_env(server, volume / Path(outbox_setting.group(1)).name, bin_dir)
    sender = Follower(env, argv=command)  # `mosaic-telemetry` resolves to bin_dir on PATH
    try:
        sender.ready()
        ids = _track_with_hook(env, tmp_path, count=3)
        assert server.wait_for_events(3, timeout=SLACK)
        code, err = sender.stop(signal.SIGTERM, bound=float(grace.group(1)))
    finally:
        if sender.proc.poll() is None:
            sender.proc.kill()
            sender.proc.wait()
    assert code == 0, err
    assert sorted(e["event_id"] for e in server.events) == sorted(ids)
    assert pending_ids(volume / Path(outbox_setting.group(1)).name) == []
