"""The parser and main(): usage errors, --debug, the entry points, the docs, a cheap import."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry import OutboxError
from mosaic_telemetry._store import SqliteOutbox
from mosaic_telemetry.cli import main

from ..helpers import child_env
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
def test_debug_shows_the_exception(where: str, tmp_path: Path) -> None:
    """--debug (before or after the command) lets the exception through instead of one line."""
    missing = str(tmp_path / "missing.sqlite3")
    argv = ["--debug", "status", "--outbox", missing]
    if where == "after":
        argv = ["status", "--outbox", missing, "--debug"]
    with pytest.raises(OutboxError, match="no outbox file"):
        main(argv, out=io.StringIO())


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
    commands = build_parser()._subparsers._group_actions[0].choices
    outbox_actions = commands["outbox"]._subparsers._group_actions[0].choices
    for name in [c for c in commands if c != "outbox"] + [f"outbox {a}" for a in outbox_actions]:
        assert f"## `{name}" in docs, name


LAZINESS = """
import argparse, io, sys
import mosaic_telemetry

before = set(sys.modules)
import mosaic_telemetry.cli

added = sorted(set(sys.modules) - before)
print(",".join(m for m in added if not m.startswith("mosaic_telemetry.cli")))
for argv in (["--help"], ["status", "--outbox", sys.argv[1]]):
    try:
        mosaic_telemetry.cli.main(argv, out=io.StringIO())
    except SystemExit:
        pass
print(",".join(m for m in ("requests", "urllib3", "cattrs", "tenacity") if m in sys.modules))
"""


def test_import_loads_the_parser_only_and_status_no_http_stack(filled: dict[str, Any]) -> None:
    """Importing the CLI adds only its own modules; --help and status load no HTTP stack."""
    done = subprocess.run(
        [sys.executable, "-c", LAZINESS, str(filled["path"])],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["", ""]
