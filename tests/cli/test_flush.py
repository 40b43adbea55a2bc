"""``flush``: drain now with the configured server, progress, verdicts and refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry._store import OutboxReader, SqliteOutbox
from mosaic_telemetry._wire.events import event_to_json
from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from ..helpers import API_KEY, make_event
from .support import TTY, run, snapshot


def test_flush_prints_plain_lines_when_not_a_tty(
    filled: dict[str, Any],
    env: Path,
    server: FakeTelemetryServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """flush drains with the configured server and ends with delivered/remaining/dead counts."""
    code, text = run("flush")
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == f"flushing 4 pending event(s) from {env} to {server.url}"
    assert lines[-2:] == ["sent 4/4", "delivered 4, remaining 0, dead 0"]
    assert "\r" not in text
    assert sorted(e["event_id"] for e in server.events) == sorted(filled["pending"])
    assert API_KEY not in text + capsys.readouterr().err


def test_flush_draws_a_progress_bar_on_a_tty(filled: dict[str, Any], env: Path) -> None:
    """On a terminal flush redraws one [###...] line in place."""
    code, text = run("flush", "--timeout", "10", out=TTY())
    assert code == 0
    assert "\r[" + "#" * 30 + "] 4/4\n" in text
    assert text.endswith("delivered 4, remaining 0, dead 0\n")


def test_flush_json_shape(filled: dict[str, Any], env: Path) -> None:
    """flush --json prints one object with the final counts and nothing else."""
    code, text = run("flush", "--json")
    assert code == 0
    data = json.loads(text)
    assert {k: data[k] for k in ("delivered", "remaining", "dead_lettered", "timed_out")} == {
        "delivered": 4,
        "remaining": 0,
        "dead_lettered": 0,
        "timed_out": False,
    }
    assert data["path"] == str(env)


def test_flush_with_the_server_pausing_exits_1_and_keeps_events(
    filled: dict[str, Any],
    env: Path,
    server: FakeTelemetryServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 503 with a long Retry-After: exit 1, events kept, the pause and the error persisted."""
    server.script(ScriptedReply(status=503, headers={"Retry-After": "600"}))
    code, text = run("flush", "--timeout", "10")
    err = capsys.readouterr().err
    assert code == 1
    assert text.endswith("delivered 0, remaining 4, dead 0\n")
    assert err.startswith("mosaic-telemetry: error: 4 event(s) still pending: server unavailable")
    assert "the server asked to wait until" in err and err.count("\n") == 1
    assert API_KEY not in text + err
    status = json.loads(run("status", "--json")[1])
    assert status["pending"] == 4 and status["not_before"] is not None
    assert "server unavailable (HTTP 503" in status["last_error"]


def test_flush_reports_events_the_server_rejected(
    filled: dict[str, Any], env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event the server rejects is dead-lettered by flush, which then exits 1."""
    outbox = SqliteOutbox(env)
    bad = json.loads(event_to_json(make_event()))
    bad["task_duration_ms"] = -5
    outbox.add(bad["event_id"], json.dumps(bad))
    outbox.close()
    code, text = run("flush")
    assert code == 1
    assert text.endswith("delivered 4, remaining 0, dead 1\n")
    assert "1 event(s) rejected by the server" in capsys.readouterr().err
    assert [r["event_id"] for r in OutboxReader(env).list_rows(dead=True)] == [
        filled["dead"],
        bad["event_id"],
    ]


def test_flush_refuses_an_unusable_config(
    filled: dict[str, Any],
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """flush with a malformed key exits 1 naming the problem, never the key, sending nothing."""
    bad_key = "cd" * 31
    monkeypatch.setenv("MOSAIC_TELEMETRY_API_KEY", bad_key)
    before = snapshot(env.parent)
    code, text = run("flush")
    err = capsys.readouterr().err
    assert code == 1
    assert "api_key: must be 64 hexadecimal characters" in err
    assert bad_key not in text + err
    assert snapshot(env.parent) == before


def test_flush_refuses_an_outbox_of_another_server(
    filled: dict[str, Any],
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The events of an outbox written for another server are not sent to this one."""
    monkeypatch.setenv("MOSAIC_TELEMETRY_SERVER_URL", "http://127.0.0.1:9")
    assert run("flush")[0] == 1
    assert "belongs to http://127.0.0.1:" in capsys.readouterr().err


def test_flush_refuses_dry_run(
    filled: dict[str, Any],
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """flush never drains in dry-run mode."""
    monkeypatch.setenv("MOSAIC_TELEMETRY_DRY_RUN", "1")
    assert run("flush", "--outbox", str(env))[0] == 1
    assert "dry run is on" in capsys.readouterr().err
