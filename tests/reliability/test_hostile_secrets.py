"""Scenario 12: keys that echo (issue 11). A key put by mistake in another setting is never
echoed (``validate()``, ``repr``, the client's log, ``doctor``); a key copy-pasted into the
environment with a trailing newline is stripped and that is said once at INFO; and a server
that echoes the key JSON-escaped (``\\u0061\\u0062...``) gets it into no log line, no
dead-letter reason in the outbox file or its ``-wal``, and no ``outbox list --dead`` output.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mosaic_telemetry import TelemetryClient, TelemetryConfig
from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from ..helpers import API_KEY, INSTANCE_ID, child_env, make_events
from .conftest import ROOT, wait_until

Config = Callable[..., TelemetryConfig]


def _windows(key: str, size: int = 12) -> set[str]:
    """Every ``size``-character piece of ``key``: a text holding one shows part of the key."""
    return {key[i : i + size].lower() for i in range(len(key) - size + 1)}


def _leaks(text: str, key: str) -> list[str]:
    lowered = text.lower()
    return sorted(piece for piece in _windows(key) if piece in lowered)


def _cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mosaic_telemetry", *args],
        capture_output=True,
        text=True,
        env={**child_env(), **env},
        cwd=ROOT,
        timeout=60,
    )
    return done.stdout + done.stderr


def test_a_key_put_in_the_instance_id_is_never_echoed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    report: Callable[..., None],
) -> None:
    """A key in MOSAIC_TELEMETRY_INSTANCE_ID shows in no part of validate(), repr(), the
    client's error log line, stats(), nor `doctor` (text and --json), though each names the
    field."""
    key = secrets.token_hex(32)
    env = {
        "MOSAIC_TELEMETRY_SERVER_URL": "http://127.0.0.1:9",
        "MOSAIC_TELEMETRY_API_KEY": secrets.token_hex(32),
        "MOSAIC_TELEMETRY_INSTANCE_ID": key,
        "MOSAIC_TELEMETRY_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = TelemetryConfig()
    with caplog.at_level(logging.DEBUG):
        client = TelemetryClient(config)
        stats = client.stats()
        client.stop()
    texts = {
        "validate()": "; ".join(config.validate()),
        "repr(config)": repr(config),
        "repr(client)": repr(client),
        "stats()": json.dumps(stats, default=str),
        "log": "\n".join(r.getMessage() for r in caplog.records),
        "doctor": _cli("doctor", env=env),
        "doctor --json": _cli("doctor", "--json", env=env),
    }
    leaks = {where: _leaks(text, key) for where, text in texts.items() if _leaks(text, key)}
    report("hostile secrets", case="key in INSTANCE_ID", places=sorted(texts), leaks=len(leaks))
    assert leaks == {}
    for where in ("validate()", "log", "doctor", "doctor --json"):
        assert "instance_id" in texts[where], (where, texts[where])


_STRIP_PROGRAM = """\
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
from tests.helpers import make_events
from mosaic_telemetry import TelemetryClient, TelemetryConfig
TelemetryConfig()  # a second config in the same process: the INFO line is not repeated
with TelemetryClient(TelemetryConfig(submit_interval_seconds=3600.0)) as client:
    for event in make_events(3):
        client.track(event)
    result = client.flush(timeout=20)
    problems = client.stats()["config_problems"]
print(json.dumps({"delivered": result.delivered, "problems": problems}))
"""


@pytest.mark.parametrize("pasted", ["{key}\n", "  {key} \r\n"], ids=["newline", "spaces+crlf"])
def test_a_key_with_surrounding_whitespace_from_the_environment_is_stripped_and_said_once(
    pasted: str, tmp_path: Path, report: Callable[..., None]
) -> None:
    """A key read from the environment with whitespace around it is used stripped (the server
    accepts it), and one INFO line says so without showing the key."""
    key = secrets.token_hex(32)
    with FakeTelemetryServer(api_key=key) as server:
        env = {
            **child_env(),
            "MOSAIC_TELEMETRY_SERVER_URL": server.url,
            "MOSAIC_TELEMETRY_API_KEY": pasted.format(key=key),
            "MOSAIC_TELEMETRY_INSTANCE_ID": INSTANCE_ID,
            "MOSAIC_TELEMETRY_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
        }
        done = subprocess.run(
            [sys.executable, "-c", _STRIP_PROGRAM],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
        )
        stored = len(server.events)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.splitlines()[-1])
    said = [line for line in done.stderr.splitlines() if "whitespace" in line]
    report(
        "hostile secrets",
        case=f"key with whitespace from the environment ({pasted!r})",
        delivered=outcome["delivered"],
        info_lines=len(said),
    )
    assert (outcome["delivered"], outcome["problems"], stored) == (3, [], 3)
    assert len(said) == 1 and said[0].startswith("INFO ") and "MOSAIC_TELEMETRY_API_KEY" in said[0]
    assert _leaks(done.stdout + done.stderr, key) == []


def _escaped(text: str, upper: bool = False) -> str:
    """``text`` as JSON \\u escapes, every character (the key's letters in upper case)."""
    return "".join(f"\\u{ord(c.upper() if upper else c):04x}" for c in text)


def _echo(upper: bool = False) -> str:
    return f"no: Bearer {_escaped(API_KEY, upper)}"


def test_a_json_escaped_echo_of_the_key_is_redacted_everywhere(
    server: FakeTelemetryServer,
    make_config: Config,
    outbox_path: Path,
    clients: list[TelemetryClient],
    caplog: pytest.LogCaptureFixture,
    report: Callable[..., None],
) -> None:
    """A server echoing the key as JSON escapes in 500/401 details, a per-event rejection, a
    422 message and a 400 detail: no log record, dead reason in the outbox or its -wal, nor
    `outbox list --dead` (text and --json) holds it, in any case or escaped."""
    errors: list[BaseException] = []
    client = TelemetryClient(make_config(max_retries=0, on_error=errors.append))
    clients.append(client)

    def phase(body: str, status: int, count: int = 1) -> None:
        """Track ``count`` events; the first send of them gets ``status`` with ``body``."""
        events = make_events(count)
        for event in events:
            client.track(event)
        server.script(ScriptedReply(status=status, body=body.encode()))
        client.flush(timeout=10)

    verdict = f'{{"event_id": ID, "status": "rejected", "error": "{_echo()}"}}'
    with caplog.at_level(logging.DEBUG):
        client.start()
        phase(f'{{"detail": "{_echo()}"}}', 500, count=2)
        assert wait_until(lambda: client.flush(timeout=10).remaining == 0, timeout=30)
        rejected = make_events(2)  # a 2xx whose per-event verdicts echo the key
        results = ",".join(verdict.replace("ID", f'"{e.event_id}"') for e in rejected)
        for event in rejected:
            client.track(event)
        server.script(ScriptedReply(status=202, body=f'{{"results": [{results}]}}'.encode()))
        client.flush(timeout=10)
        loc = '["body", "events", 0, "model"]'
        phase(f'{{"detail": [{{"loc": {loc}, "msg": "{_echo()}"}}]}}', 422, count=3)
        phase(f'{{"detail": "{_echo(upper=True)}"}}', 400)
        phase(f'{{"detail": "{_echo(upper=True)}"}}', 401)  # last: it pauses sending
        files = {p.name: p.read_bytes() for p in outbox_path.parent.iterdir() if p.is_file()}
        last_error = str(client.stats()["last_error"])
        client.stop()
    env = {"MOSAIC_TELEMETRY_API_KEY": API_KEY, "MOSAIC_TELEMETRY_OUTBOX_PATH": str(outbox_path)}
    listing = _cli("outbox", "list", "--dead", "--outbox", str(outbox_path), env=env)
    listing_json = _cli("outbox", "list", "--dead", "--json", "--outbox", str(outbox_path), env=env)
    dead = json.loads(listing_json)
    records = [f"{r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    texts = {
        "log records": "\n".join(records),
        "errors passed to on_error": "\n".join(f"{e!s} {e!r}" for e in errors),
        "stats()['last_error']": last_error,
        "outbox list --dead": listing,
        "outbox list --dead --json": listing_json,
    }
    escaped_forms = [_escaped(API_KEY)[:60], _escaped(API_KEY, upper=True)[:60]]
    leaks = [where for where, text in texts.items() if _leaks(text, API_KEY)]
    leaks += [where for where, text in texts.items() if any(f in text for f in escaped_forms)]
    for name, blob in files.items():
        text = blob.decode("latin-1")
        if _leaks(text, API_KEY) or any(f in text for f in escaped_forms):
            leaks.append(name)
    redacted_reasons = [r for r in dead if "[api key]" in str(r.get("reason"))]
    report(
        "hostile secrets",
        case="JSON-escaped echo of the key",
        log_records=len(records),
        error_lines=sum(1 for r in caplog.records if r.levelno >= logging.ERROR),
        dead_letters=len(dead),
        redacted_reasons=len(redacted_reasons),
        files=sorted(files),
        leaks=len(leaks),
    )
    assert leaks == []
    assert {f"{outbox_path.name}-wal", outbox_path.name} <= set(files)
    # The echo was there: the 4 dead letters (2 rejected, one 422 index, one 400) say where.
    assert len(dead) == 4 and len(redacted_reasons) == 4, dead
    assert any("[api key]" in line for line in records if line.startswith("ERROR"))
    assert re.search(r"\[api key\]", listing)
