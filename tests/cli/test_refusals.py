"""Every command refuses a file that is not a usable outbox, and changes no byte of it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from .support import run, snapshot, write_foreign

INSPECTIONS = [
    ["status"],
    ["status", "--json"],
    ["outbox", "list"],
    ["outbox", "list", "--dead", "--json"],
    ["outbox", "show", "00000000-0000-4000-8000-000000000000"],
    ["outbox", "export"],
    ["outbox", "export", "--dead"],
    ["doctor"],
]
REPAIRS_AND_FLUSH = [
    ["outbox", "requeue", "--all"],
    ["outbox", "purge", "--all", "--yes"],
    ["flush"],
]
#: predict may create a missing outbox (its cache lives there) but refuses an unusable one.
PREDICT_ARGV = [
    [
        "predict",
        "--task-type",
        "testing",
        "--model",
        "m",
        "--provider",
        "openai",
        "--complexity",
        "low",
    ]
]


@pytest.mark.parametrize("argv", INSPECTIONS, ids=" ".join)
def test_inspection_leaves_the_directory_byte_identical(
    argv: list[str], filled: dict[str, Any], env: Path
) -> None:
    """Inspecting a closed outbox (no -wal/-shm) changes no byte and creates no side file."""
    before = snapshot(env.parent)
    code, _ = run(*argv)
    assert code == (1 if argv[:2] == ["outbox", "show"] else 0)  # that id is not in the file
    assert snapshot(env.parent) == before


@pytest.mark.parametrize("argv", INSPECTIONS[:-1] + REPAIRS_AND_FLUSH, ids=" ".join)
def test_missing_file_is_an_error_and_is_not_created(
    argv: list[str], tmp_path: Path, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing outbox: exit 1, one clear line on stderr, no file or directory created."""
    missing = tmp_path / "nowhere" / "outbox.sqlite3"
    code, _ = run(*argv, "--outbox", str(missing))
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("mosaic-telemetry: error: no outbox file at ")
    assert str(missing) in err
    assert not missing.parent.exists()


def test_missing_default_file_says_where_it_looked(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --outbox, the error names the resolved path and how to pick another."""
    assert run("status")[0] == 1
    err = capsys.readouterr().err
    assert str(env) in err and "--outbox" in err
    assert not env.exists()


@pytest.mark.parametrize("argv", INSPECTIONS + REPAIRS_AND_FLUSH + PREDICT_ARGV, ids=" ".join)
def test_corrupt_file_is_refused_and_left_in_place(
    argv: list[str], env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not SQLite: exit 1, a clear message, the file neither changed nor moved."""
    env.parent.mkdir(parents=True)
    env.write_bytes(b"this is not a database, it only looks like one\n" * 200)
    before = snapshot(env.parent)
    code, out = run(*argv)
    err = capsys.readouterr().err
    assert code == 1
    assert "corrupt or not SQLite" in err + out
    assert "Traceback" not in err
    assert snapshot(env.parent) == before


@pytest.mark.parametrize("argv", INSPECTIONS + REPAIRS_AND_FLUSH + PREDICT_ARGV, ids=" ".join)
def test_other_schema_version_is_refused_untouched(
    argv: list[str], filled: dict[str, Any], env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outbox of another schema_version: exit 1, both versions named, the file untouched."""
    conn = sqlite3.connect(env)
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = snapshot(env.parent)
    code, out = run(*argv)
    err = capsys.readouterr().err
    assert code == 1
    assert "schema_version '2'" in err + out and "schema_version '1'" in err + out
    assert snapshot(env.parent) == before


def test_foreign_sqlite_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An SQLite file of another application is named as such and not touched."""
    path = tmp_path / "app.db"
    write_foreign(path, ["CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"])
    before = snapshot(tmp_path)
    assert run("status", "--outbox", str(path))[0] == 1
    assert "not a mosaic_telemetry outbox (tables: users)" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
