"""Secrets never shown: the API key is redacted from everything the CLI prints, in any encoding."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry._store import LeaseOwner, OutboxReader, SqliteOutbox
from mosaic_telemetry._wire.events import event_to_json
from mosaic_telemetry.cli import redact
from mosaic_telemetry.cli.redact import REDACTED, RedactingStream, Redactor, secrets_from_env

from ..helpers import API_KEY, make_event
from .support import run

#: A second key-like value, put by mistake where the instance id goes.
OTHER_KEY = "0123456789abcdef" * 4


def json_escaped(text: str) -> str:
    """Every character as a JSON \\uXXXX escape, as a server's JSON encoder may send it."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


def decoded(text: str) -> str:
    """``text`` with JSON/Python escapes, URL-encoding and HTML entities undone, lower-cased."""
    for _ in range(3):
        text = re.sub(r"\\+u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
        text = re.sub(r"\\+x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text)
        text = html.unescape(urllib.parse.unquote(text))
    return text.lower()


def shows(text: str, secret: str) -> bool:
    """Whether ``text`` shows the secret, or its first 16 characters, in a decodable form."""
    return secret[:16].lower() in decoded(text)


# --- the redactor ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "form",
    [
        API_KEY,
        API_KEY.upper(),
        json.dumps({"detail": f"Bearer {API_KEY}"}),
        json_escaped(API_KEY),
        json.dumps(json_escaped(API_KEY)),  # escaped twice: \\u0061...
        json_escaped(API_KEY.upper()),
        "".join(f"%{ord(c):02X}" for c in API_KEY),
        urllib.parse.quote("".join(f"%{ord(c):02x}" for c in API_KEY)),  # %2561...
        "".join(c if i % 2 else f"\\u{ord(c):04X}" for i, c in enumerate(API_KEY)),  # mixed
        "".join(f"&#{ord(c)};" for c in API_KEY),
        "".join(f"\\x{ord(c):02x}" for c in API_KEY),
        f"key={API_KEY[:59]}",  # cut short, as f"{key!r:.60}" does
    ],
    ids=range(12),
)
def test_every_printable_form_of_the_key_is_hidden(form: str) -> None:
    """Raw, upper-cased, JSON-escaped (once, twice, mixed), URL-encoded, HTML, \\x, cut short."""
    assert shows(form, API_KEY) or API_KEY[:16] in form.lower()  # the form does carry it
    hidden = Redactor([API_KEY])(f"reason: {form} (HTTP 403)")
    assert not shows(hidden, API_KEY)
    assert hidden.startswith("reason: ") and hidden.endswith(" (HTTP 403)") and REDACTED in hidden


@pytest.mark.parametrize("prefix", ["", "B", "Be", "Bearer "])
def test_base64_of_a_text_holding_the_key_is_hidden(prefix: str) -> None:
    """The key base64-encoded inside a longer text, wherever it starts in a 3-byte group."""
    encoded = base64.b64encode(f"{prefix}{API_KEY}!".encode()).decode()
    hidden = Redactor([API_KEY])(encoded)
    assert REDACTED in hidden
    leftover = hidden.replace(REDACTED, "")
    assert len(leftover) <= 4 * (len(prefix) // 3) + 12  # the prefix's own groups and the edges


def test_ordinary_text_is_left_alone() -> None:
    """Text without a secret, hex ids and hashes included, comes out unchanged."""
    text = (
        "ID  EVENT_ID  8b1beb5e-106f-47ea-b40e-791b3e8eab28  outbox-0123abcd0123abcd.sqlite3 "
        "%20 &amp; \\n ab ab abab"
    )
    assert Redactor([API_KEY, OTHER_KEY])(text) == text
    assert Redactor(["short", "", None])("a short text") == "a short text"
    assert Redactor()("f" * 63 + " " + "e" * 65) == "f" * 63 + " " + "e" * 65


def test_anything_key_shaped_is_hidden_even_unconfigured() -> None:
    """64 hex digits in a row are hidden as the SDK's own redaction does, with no key known."""
    assert Redactor()(f"key={'9f' * 32};") == "key=[api key];"


def test_secrets_from_env_are_the_key_and_key_like_values() -> None:
    """The API key (stripped) and any MOSAIC_TELEMETRY_* value of 64 hex characters."""
    env = {
        "MOSAIC_TELEMETRY_API_KEY": f" {API_KEY}\n",
        "MOSAIC_TELEMETRY_INSTANCE_ID": OTHER_KEY,
        "MOSAIC_TELEMETRY_SERVER_URL": "https://telemetry.example.com",
        "OTHER_TOKEN": "ef" * 32,
    }
    assert sorted(secrets_from_env(env)) == sorted([API_KEY, OTHER_KEY])


def test_the_env_prefix_is_the_configs() -> None:
    """The redactor reads the same MOSAIC_TELEMETRY_* variables TelemetryConfig reads."""
    from mosaic_telemetry._config import ENV_PREFIX

    assert redact.ENV_PREFIX == ENV_PREFIX


def test_the_stream_redacts_a_key_split_over_two_writes() -> None:
    """Text is held until a newline or flush, so a key written in two pieces is still found."""
    target = io.StringIO()
    stream = RedactingStream(target, Redactor([API_KEY]))
    stream.write("first line\nkey " + API_KEY[:30])
    assert target.getvalue() == "first line\n"
    stream.write(API_KEY[30:] + " end\nno newline " + API_KEY)
    stream.flush()
    assert target.getvalue() == f"first line\nkey {REDACTED} end\nno newline {REDACTED}"


# --- every command ------------------------------------------------------------------------------
@pytest.fixture
def leaky(filled: dict[str, Any], env: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The filled outbox plus a dead letter whose reason and body echo the key, encoded."""
    outbox = SqliteOutbox(env)
    body = json.loads(event_to_json(make_event()))
    body["model"] = "".join(f"%{ord(c):02x}" for c in API_KEY)  # a URL-encoded echo
    outbox.add(body["event_id"], json.dumps(body))
    owner = LeaseOwner.for_this_process()
    claimed = outbox.claim(owner, 10, 30.0)
    row = next(r for r in claimed if r.event_id == body["event_id"])
    reason = f'rejected by server: {{"detail": "no: Bearer {json_escaped(API_KEY)}"}}'
    outbox.dead_letter([(row.row_id, reason, 401)])
    outbox.release(owner, [r.row_id for r in claimed if r is not row])
    outbox.close()
    conn = sqlite3.connect(env)
    with conn:
        error = json.dumps({"at": 1795738264.5, "error": f"server said: {API_KEY} is wrong"})
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_error', ?)", (error,))
    conn.close()
    # What the file holds does carry the key, so the checks below can fail.
    reasons = [r["reason"] for r in OutboxReader(env).list_rows(dead=True)]
    assert len(reasons) == 2 and shows(reasons[-1], API_KEY)
    monkeypatch.setenv("MOSAIC_TELEMETRY_INSTANCE_ID", OTHER_KEY)  # the key in the wrong place
    return {**filled, "leaky": body["event_id"]}


def test_no_command_shows_the_key(
    leaky: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """list --dead, show, export, status and doctor, text and JSON: neither key in any form."""
    argvs = [
        ["outbox", "list", "--dead"],
        ["outbox", "list", "--dead", "--json"],
        ["outbox", "show", leaky["leaky"][:8]],
        ["outbox", "show", leaky["leaky"], "--json"],
        ["outbox", "export", "--dead"],
        ["outbox", "export", "--dead", "--json"],
        ["status"],
        ["status", "--json"],
        ["doctor"],
        ["doctor", "--json"],
    ]
    for argv in argvs:
        code, text = run(*argv)
        err = capsys.readouterr().err
        assert code in (0, 1), argv
        assert not shows(text + err, API_KEY), argv
        assert not shows(text + err, OTHER_KEY), argv
    assert REDACTED in run("outbox", "list", "--dead")[1]
    assert "instance [api key]" in run("doctor")[1] or "got '[api key]" in run("doctor")[1]


@pytest.mark.parametrize("debug", [[], ["--debug"]], ids=["one line", "traceback"])
def test_error_lines_never_show_the_key(
    debug: list[str], leaky: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """An error naming what the user typed (here the key itself) is redacted, traceback too."""
    for secret in (API_KEY, OTHER_KEY, json_escaped(API_KEY)):
        assert run(*debug, "outbox", "show", secret)[0] == 1
        err = capsys.readouterr().err
        assert "no event [api key]" in err
        assert not shows(err, API_KEY) and not shows(err, OTHER_KEY)


def test_the_stream_closes_quietly_after_its_target_and_never_closes_the_target() -> None:
    """close() (and the finaliser) after the target was closed raise nothing; close() before
    writes out the text held back, redacted, and leaves the target open."""
    gone = io.StringIO()
    stream = RedactingStream(gone, Redactor([API_KEY]))
    stream.write("held back")
    gone.close()
    stream.close()
    assert stream.closed

    target = io.StringIO()
    stream = RedactingStream(target, Redactor([API_KEY]))
    stream.write(f"tail {API_KEY}")
    stream.close()
    assert target.getvalue() == f"tail {REDACTED}" and not target.closed
