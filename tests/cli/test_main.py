"""The parser and main(): usage errors, --debug, the entry points, the docs, a cheap import."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry._store import SqliteOutbox
from mosaic_telemetry._wire.events import event_to_json
from mosaic_telemetry.cli import main
from mosaic_telemetry.testing import FakeTelemetryServer

from ..helpers import child_env, make_event
from .support import run


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nope"],
        ["outbox"],
        ["outbox", "list", "--limit", "-1"],
        ["flush", "--timeout", "0"],
        ["outbox", "export", "--format", "csv"],
        ["outbox", "purge", "--dead", "--all", "--yes"],
    ],
    ids=repr,
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Bad command lines are argparse usage errors: exit 2 and a usage line on stderr."""
    assert run(*argv)[0] == 2
    assert "usage: mosaic-telemetry" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--debug (before or after the command) prints the traceback instead of one line; exit 1."""
    missing = str(tmp_path / "missing.sqlite3")
    argv = ["--debug", "status", "--outbox", missing]
    if where == "after":
        argv = ["status", "--outbox", missing, "--debug"]
    assert main(argv, out=io.StringIO()) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n")
    assert err.endswith(f"OutboxError: no outbox file at {missing}\n")


def test_version_is_the_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the installed distribution's version on stdout and exits 0."""
    from mosaic_telemetry._version import get_version

    assert run("--version") == (0, f"mosaic-telemetry {get_version()}\n")
    assert capsys.readouterr().err == ""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        assert get_version() == importlib.metadata.version("mosaicstack-telemetry")


def test_help_goes_to_the_output_stream() -> None:
    """--help is printed on the output stream like any other output, and exits 0."""
    code, text = run("outbox", "list", "--help")
    assert code == 0
    assert text.startswith("usage: mosaic-telemetry outbox list ")
    assert "--since WHEN" in text and "--offset N" in text and "--status" in text


def test_python_dash_m_in_a_subprocess(filled: dict[str, Any], tmp_path: Path) -> None:
    """python -m mosaic_telemetry runs the CLI: JSON on stdout, errors as one line, no traceback."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mosaic_telemetry",
            "status",
            "--json",
            "--outbox",
            str(filled["path"]),
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pending"] == 4
    missing = tmp_path / "missing.sqlite3"
    done = subprocess.run(
        [sys.executable, "-m", "mosaic_telemetry", "outbox", "list", "--outbox", str(missing)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == f"mosaic-telemetry: error: no outbox file at {missing}\n"
    assert done.stdout == ""


def test_installed_console_script(filled: dict[str, Any]) -> None:
    """The installed mosaic-telemetry script runs (skipped where the package is not installed)."""
    beside = Path(sys.executable).with_name("mosaic-telemetry")
    script = str(beside) if beside.exists() else shutil.which("mosaic-telemetry")
    if script is None:
        pytest.skip("mosaic-telemetry is not installed (tox installs it)")
    done = subprocess.run(
        [script, "outbox", "list", "--json", "--outbox", str(filled["path"])],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [r["event_id"] for r in json.loads(done.stdout)] == filled["pending"]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-command parsers of ``parser`` by name (argparse keeps them in a private action)."""
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_docs_describe_every_column_key_and_command(tmp_path: Path) -> None:
    """docs/cli.md names every column and meta key a fresh outbox has, and every command."""
    from mosaic_telemetry._store import META_LAST_ERROR, TABLES
    from mosaic_telemetry.cli import build_parser

    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    outbox = SqliteOutbox(tmp_path / "fresh.sqlite3")
    outbox.close()
    conn = sqlite3.connect(tmp_path / "fresh.sqlite3")
    try:
        columns = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in TABLES}
        keys = [r[0] for r in conn.execute("SELECT key FROM meta")]
    finally:
        conn.close()
    for table, names in columns.items():
        assert f"### Table `{table}`" in docs
        assert [n for n in names if f"`{n}`" not in docs] == [], table
    assert [k for k in [*keys, META_LAST_ERROR] if f"`{k}`" not in docs] == []
    commands = subcommands(build_parser())
    outbox_actions = subcommands(commands["outbox"])
    for name in [c for c in commands if c != "outbox"] + [f"outbox {a}" for a in outbox_actions]:
        assert f"## `{name}" in docs, name


LAZINESS = """
import argparse, io, sys
import mosaic_telemetry

# What the parser may need: the base modules (enums for choices, the logger, redaction).
BASE = {"mosaic_telemetry._enums", "mosaic_telemetry._forksafe", "mosaic_telemetry._log",
        "mosaic_telemetry._secrets"}

before = set(sys.modules)
import mosaic_telemetry.cli

added = sorted(set(sys.modules) - before)
heavy = ("attrs", "sqlite3", "requests", "urllib3", "cattrs", "tenacity", "platformdirs")
print(",".join(
    m for m in added
    if m.split(".")[0] in heavy
    or (m.startswith("mosaic_telemetry.") and not m.startswith("mosaic_telemetry.cli")
        and m not in BASE)
))
for argv in (["--help"], ["status", "--outbox", sys.argv[1]], ["status", "--all"]):
    try:
        mosaic_telemetry.cli.main(argv, out=io.StringIO())
    except SystemExit:
        pass
print(",".join(m for m in ("requests", "urllib3", "cattrs", "tenacity") if m in sys.modules))
"""


def test_import_loads_the_parser_only_and_status_no_http_stack(filled: dict[str, Any]) -> None:
    """Importing the CLI adds only its own modules and the SDK's base (no store, delivery or
    wire, no attrs or sqlite3); --help and status load no HTTP stack."""
    done = subprocess.run(
        [sys.executable, "-c", LAZINESS, str(filled["path"])],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["", ""]


@pytest.fixture
def many(tmp_path: Path, server: FakeTelemetryServer) -> Path:
    """A closed outbox of 3,000 events: far more text than a pipe buffer holds."""
    path = tmp_path / "many.sqlite3"
    outbox = SqliteOutbox(path, server_url=server.url, max_pending=10_000)
    body = event_to_json(make_event())
    outbox.add_many([(str(uuid.uuid4()), body) for _ in range(3000)])
    outbox.close()
    return path


@pytest.mark.parametrize(
    "argv",
    [["outbox", "list", "--limit", "0"], ["outbox", "export", "--json"]],
    ids=" ".join,
)
def test_a_closed_pipe_ends_quietly(argv: list[str], many: Path) -> None:
    """`... | head -1`: the reader closes the pipe; no traceback, no message, exit 0 or 141."""
    child = subprocess.Popen(
        [sys.executable, "-m", "mosaic_telemetry", *argv, "--outbox", str(many)],
        env={**child_env(), "MOSAIC_TELEMETRY_API_KEY": "ab" * 32},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()
    child.stdout.close()  # what head does after its line
    err = child.stderr.read()
    assert child.wait(timeout=60) in (0, 141)
    assert first and err == b""
