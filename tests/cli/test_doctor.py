"""``doctor``: config, outbox, permissions, disk and server, one line each; the key never shown."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry.testing import FakeTelemetryServer

from ..helpers import API_KEY
from .support import run, snapshot


def test_doctor_all_ok_and_never_prints_the_key(
    filled: dict[str, Any], env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a good config, a healthy private outbox and a live server every check is ok."""
    run("outbox", "purge", "--dead", "--yes")
    os.chmod(env, 0o600)
    os.chmod(env.parent, 0o700)
    code, text = run("doctor")
    err = capsys.readouterr().err
    assert code == 0, text
    assert [line[:5] + line[5:].split(":")[0] for line in text.splitlines()] == [
        "ok   config",
        "ok   outbox",
        "ok   outbox permissions",
        "ok   disk",
        "ok   server",
    ]
    assert API_KEY not in text + err
    checks = json.loads(run("doctor", "--json")[1])
    assert [c["status"] for c in checks] == ["ok"] * 5
    assert {c["check"] for c in checks} == {
        "config",
        "outbox",
        "outbox permissions",
        "disk",
        "server",
    }


def test_doctor_fails_on_a_bad_config_and_a_dead_server(
    filled: dict[str, Any],
    env: Path,
    server: FakeTelemetryServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A malformed key and an unreachable server are fail lines, exit 1, the key never shown."""
    bad_key = "ef" * 20
    monkeypatch.setenv("MOSAIC_TELEMETRY_API_KEY", bad_key)
    server.stop()
    code, text = run("doctor")
    err = capsys.readouterr().err
    assert code == 1
    assert "fail config: api_key: must be 64 hexadecimal characters (got 40" in text
    assert any(
        line.startswith("fail server: predictions request failed") for line in text.splitlines()
    )
    assert "warn dead letters: 1 event(s)" in text
    assert bad_key not in text + err


def test_doctor_warns_on_loose_permissions(filled: dict[str, Any], env: Path) -> None:
    """A world-readable outbox or directory is a warning, not a failure."""
    os.chmod(env, 0o644)
    os.chmod(env.parent, 0o755)
    code, text = run("doctor")
    assert code == 0
    assert (
        "warn outbox permissions: file mode 0644, expected 0600; directory mode 0755, "
        "expected 0700" in text
    )


def test_doctor_without_an_outbox_yet(env: Path) -> None:
    """No outbox file yet is a warning (the first client creates it), and none is created."""
    code, text = run("doctor")
    assert code == 0
    assert f"warn outbox: no file yet at {env}" in text
    assert not env.parent.exists()


def test_damaged_pages_fail_quick_check_in_doctor(filled: dict[str, Any], env: Path) -> None:
    """An outbox with a damaged b-tree page fails doctor's outbox check and stays as it was."""
    data = bytearray(env.read_bytes())
    page = 4096
    data[2 * page : 2 * page + 64] = b"\xff" * 64  # scribble over a table page's header
    env.write_bytes(bytes(data))
    before = snapshot(env.parent)
    code, text = run("doctor")
    assert code == 1
    assert any(line.startswith("fail outbox:") for line in text.splitlines())
    assert snapshot(env.parent) == before
