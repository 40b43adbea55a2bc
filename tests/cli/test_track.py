"""``track``: an event from flags or JSON on stdin, checked, written to the outbox, not sent."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry import PredictionQuery, TelemetryClient, TelemetryConfig
from mosaic_telemetry.testing import FakeTelemetryServer

from ..helpers import ANSWER, API_KEY
from .support import run

FLAGS = [
    "--task-type",
    "implementation",
    "--model",
    "claude-sonnet-4-5-20250929",
    "--provider",
    "anthropic",
    "--harness",
    "claude_code",
    "--complexity",
    "medium",
    "--outcome",
    "success",
    "--duration-ms",
    "45000",
    "--actual-in",
    "112340",
    "--actual-out",
    "38760",
    "--actual-cost",
    "919200",
    "--passed",
    "true",
]
RECORD: dict[str, Any] = {
    "task_type": "testing",
    "model": "gpt-4o",
    "provider": "openai",
    "harness": "aider",
    "complexity": "low",
    "outcome": "failure",
    "task_duration_ms": 5000,
    "actual_input_tokens": 1000,
    "actual_output_tokens": 200,
    "actual_cost_usd_micros": 3000,
    "quality_gate_passed": False,
}


def rows(path: Path) -> dict[str, dict[str, Any]]:
    """The outbox's pending events by event_id (read with a connection of our own)."""
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT event_id, body FROM events").fetchall()
    return {event_id: json.loads(body) for event_id, body in found}


def with_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Give the command ``text`` on stdin (a pipe, not a terminal)."""
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_flags_write_one_event_and_send_nothing(env: Path, server: FakeTelemetryServer) -> None:
    """The flags become one event on disk; stdout is its event_id; no request is made."""
    code, text = run("track", *FLAGS, "--gates-run", "build,test", "--language", "python")
    assert code == 0
    (event_id,) = text.split()
    body = rows(env)[event_id]
    assert (body["task_type"], body["harness"], body["task_duration_ms"]) == (
        "implementation",
        "claude_code",
        45000,
    )
    assert (body["actual_input_tokens"], body["actual_cost_usd_micros"]) == (112340, 919200)
    assert (body["quality_gate_passed"], body["quality_gates_run"]) == (True, ["build", "test"])
    assert body["language"] == "python"
    assert server.requests == []


def test_defaults_are_those_of_client_task(env: Path) -> None:
    """What the shell did not say: estimates 0 (no estimate), context 0/0/0.0, no gates."""
    code, text = run("track", *FLAGS)
    assert code == 0
    body = rows(env)[text.strip()]
    unset = {
        "estimated_input_tokens": 0,
        "estimated_output_tokens": 0,
        "estimated_cost_usd_micros": 0,
        "context_compactions": 0,
        "context_rotations": 0,
        "context_utilization_final": 0.0,
        "quality_gates_run": [],
        "quality_gates_failed": [],
        "retry_count": 0,
        "repo_size_category": None,
    }
    assert {k: body[k] for k in unset} == unset


def test_estimates_come_from_a_prediction_cached_in_the_outbox(
    env: Path, server: FakeTelemetryServer
) -> None:
    """A prediction an agent cached in the same file gives the medians; a given estimate wins."""
    query = PredictionQuery(
        task_type="implementation",
        model="claude-sonnet-4-5-20250929",
        provider="anthropic",
        complexity="medium",
    )
    server.set_prediction(query, ANSWER)
    agent = TelemetryClient(TelemetryConfig())
    agent.refresh_predictions_sync([query])
    agent.stop()
    requests_before = len(server.requests)
    code, text = run("track", *FLAGS, "--estimated-out", "5")
    assert code == 0
    body = rows(env)[text.strip()]
    estimates = [
        body["estimated_input_tokens"],
        body["estimated_output_tokens"],
        body["estimated_cost_usd_micros"],
    ]
    assert estimates == [110_000, 5, 910_000]
    assert len(server.requests) == requests_before  # read from the file, not asked


def test_json_object_and_json_lines_on_stdin(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One (pretty-printed) object is one event; JSON lines are one event per line."""
    with_stdin(monkeypatch, json.dumps(RECORD, indent=2))
    code, text = run("track")
    assert code == 0 and len(text.split()) == 1
    lines = "\n".join(json.dumps({**RECORD, "retry_count": n}) for n in range(3)) + "\n\n"
    with_stdin(monkeypatch, lines)
    code, text = run("track", "--json")
    assert code == 0
    tracked = json.loads(text)["tracked"]
    stored = rows(env)
    assert sorted(stored[i]["retry_count"] for i in tracked) == [0, 1, 2]
    assert len(stored) == 4


def test_given_event_id_and_timestamp_are_kept(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record may carry its own event_id and timestamp (re-tracking an exported event)."""
    record = {
        **RECORD,
        "event_id": "0b6c1e0e-5b3a-4c55-9a57-5d2b1f7e9a01",
        "timestamp": "2026-11-30T10:00:00Z",
    }
    with_stdin(monkeypatch, json.dumps(record))
    code, text = run("track")
    assert (code, text) == (0, "0b6c1e0e-5b3a-4c55-9a57-5d2b1f7e9a01\n")
    assert rows(env)[record["event_id"]]["timestamp"].startswith("2026-11-30T10:00:00")


BAD_FLAGS = [
    (["--actual-in", "lots"], ["actual_input_tokens (--actual-in): must be a whole number"]),
    (["--passed", "maybe"], ["quality_gate_passed (--passed): must be true or false"]),
    (["--provider", "acme"], ["provider: cannot read 'acme'"]),
    (["--actual-cost", "-1"], ["actual_cost_usd_micros: must be in 0..100,000,000"]),
    (
        ["--gates-run", "build", "--gates-failed", "test"],
        ["quality_gates_failed: must be a subset of quality_gates_run"],
    ),
]


@pytest.mark.parametrize(("extra", "expected"), BAD_FLAGS, ids=[b[0][0] for b in BAD_FLAGS])
def test_a_bad_flag_exits_2_names_the_field_and_writes_nothing(
    extra: list[str],
    expected: list[str],
    env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit 2, the field (and the flag) named once, and no outbox file created."""
    code, text = run("track", *FLAGS, *extra)
    err = capsys.readouterr().err
    assert (code, text) == (2, "")
    for line in expected:
        assert err.count(line) == 1, err
    assert "nothing written" in err
    assert not env.exists()


def test_every_bad_field_is_named_at_once(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Several bad values and the missing facts: all in one run, one line each."""
    code, _ = run("track", "--task-type", "nap", "--model", "m", "--duration-ms", "1.5")
    err = capsys.readouterr().err
    assert code == 2
    for name in (
        "task_type: cannot read 'nap'",
        "task_duration_ms (--duration-ms): must be a whole number",
        "provider: required",
        "harness: required",
        "complexity: required",
        "outcome: required",
        "actual_input_tokens: required",
        "actual_output_tokens: required",
        "actual_cost_usd_micros: required",
        "quality_gate_passed: required",
    ):
        assert name in err, name
    assert "model:" not in err and "task_duration_ms: required" not in err
    assert not env.exists()


BAD_STDIN = [
    ("", "stdin: empty"),
    ("[{}]", "stdin: a JSON array"),
    (json.dumps(RECORD) + "\n{not json\n", "line 2: not JSON"),
    (json.dumps(RECORD) + "\n42\n", "line 2: must be a JSON object, got int"),
    (json.dumps({**RECORD, "cost": 1}), "cost: unknown key"),
    (json.dumps(RECORD) + "\n" + json.dumps({**RECORD, "model": ""}), "line 2: model: must be"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_STDIN, ids=[b[1] for b in BAD_STDIN])
def test_bad_stdin_exits_2_and_no_record_is_written(
    text: str,
    expected: str,
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One bad record (or line) among good ones: exit 2 naming it, and none is written."""
    with_stdin(monkeypatch, text)
    code, out = run("track")
    assert (code, out) == (2, "")
    assert expected in capsys.readouterr().err
    assert not env.exists()


def test_no_flags_and_a_terminal_on_stdin_is_a_usage_error(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It never sits waiting for a human to type JSON."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal())
    assert run("track") == (2, "")
    assert "give it as flags" in capsys.readouterr().err


def test_missing_instance_id_says_where_it_comes_from(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without MOSAIC_TELEMETRY_INSTANCE_ID the error names the field and the variable."""
    monkeypatch.delenv("MOSAIC_TELEMETRY_INSTANCE_ID")
    assert run("track", *FLAGS)[0] == 2
    assert "instance_id: required (set MOSAIC_TELEMETRY_INSTANCE_ID)" in capsys.readouterr().err


def test_disabled_telemetry_writes_nothing_and_exits_0(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """MOSAIC_TELEMETRY_ENABLED=false: the hook must not fail, and nothing is written."""
    monkeypatch.setenv("MOSAIC_TELEMETRY_ENABLED", "false")
    assert run("track", *FLAGS) == (0, "")
    assert "disabled" in capsys.readouterr().err
    assert not env.exists()


def test_an_unwritable_outbox_is_exit_1_not_a_silent_loss(
    env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outbox path that cannot be a database: the event would live in memory only, so exit 1."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("MOSAIC_TELEMETRY_OUTBOX_PATH", str(blocker / "outbox.sqlite3"))
    code, text = run("track", *FLAGS)
    err = capsys.readouterr().err
    assert (code, text) == (1, "")
    assert "1 event(s) not written" in err
    assert API_KEY not in err


def test_an_outbox_locked_by_another_writer_throughout_is_exit_1(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another connection holds the write lock for the whole run: the event stayed in this
    process's memory only, so track says so (exit 1) instead of exiting 0 and losing it."""
    from mosaic_telemetry._store import SqliteOutbox

    SqliteOutbox(env).close()  # the file exists, as when an agent runs next to the hook
    holder = sqlite3.connect(env, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        code, text = run("track", *FLAGS)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert (code, text) == (1, "")
    assert "1 event(s) not written" in capsys.readouterr().err
    assert rows(env) == {}
