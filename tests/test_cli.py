"""The command line: every command through main(argv), real SQLite files, a real loopback server."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry import OutboxError, TelemetryClient
from mosaic_telemetry._store import LeaseOwner, OutboxReader, SqliteOutbox
from mosaic_telemetry._wire.events import event_to_json
from mosaic_telemetry.cli import main
from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from .helpers import ANSWER, API_KEY, INSTANCE_ID, child_env, make_event, make_events

PREDICT = [
    "predict",
    "--task-type",
    "implementation",
    "--model",
    "claude-sonnet-4-5-20250929",
    "--provider",
    "anthropic",
    "--complexity",
    "medium",
]


class TTY(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def run(*argv: str, out: io.StringIO | None = None) -> tuple[int, str]:
    """Run main(argv) and return (exit code, what it printed on its output stream)."""
    stream = out if out is not None else io.StringIO()
    code = main(list(argv), out=stream)
    return code, stream.getvalue()


def snapshot(directory: Path) -> dict[str, tuple[str, int, int]]:
    """Name -> (sha256, size, mtime_ns) of every file in ``directory``."""
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.iterdir())
    }


@pytest.fixture
def env(server: FakeTelemetryServer, outbox_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MOSAIC_TELEMETRY_* pointing at the test server and the test's outbox; returns its path."""
    monkeypatch.setenv("MOSAIC_TELEMETRY_SERVER_URL", server.url)
    monkeypatch.setenv("MOSAIC_TELEMETRY_API_KEY", API_KEY)
    monkeypatch.setenv("MOSAIC_TELEMETRY_INSTANCE_ID", INSTANCE_ID)
    monkeypatch.setenv("MOSAIC_TELEMETRY_OUTBOX_PATH", str(outbox_path))
    return outbox_path


@pytest.fixture
def filled(server: FakeTelemetryServer, outbox_path: Path) -> dict[str, Any]:
    """An outbox file with 4 pending events and 1 dead letter, closed (no -wal/-shm left)."""
    outbox = SqliteOutbox(outbox_path, server_url=server.url)
    events = make_events(5)
    for event in events:
        outbox.add(str(event.event_id), event_to_json(event))
    claimed = outbox.claim(LeaseOwner.for_this_process(), 1, 30.0)
    outbox.dead_letter([(claimed[0].row_id, "rejected by server: bad key fixed later", 403)])
    outbox.close()
    ids = [str(e.event_id) for e in events]
    assert sorted(p.name for p in outbox_path.parent.iterdir()) == [outbox_path.name]
    status = OutboxReader(outbox_path).status()
    assert (status.pending, status.dead, status.leased) == (4, 1, 0)
    return {"path": outbox_path, "dead": ids[0], "pending": ids[1:]}


def write_foreign(path: Path, statements: list[str]) -> None:
    """Create an SQLite file by hand (and close it, so no side files remain)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


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


# --- status -----------------------------------------------------------------------------------
def test_status_json_has_the_documented_keys(
    filled: dict[str, Any], server: FakeTelemetryServer
) -> None:
    """status --json is one object with counts, age, path, identity and persisted counters."""
    code, text = run("status", "--json", "--outbox", str(filled["path"]))
    assert code == 0
    data = json.loads(text)
    assert data["pending"] == 4
    assert data["dead"] == 1
    assert data["leased"] == 0
    assert data["path"] == str(filled["path"])
    assert data["oldest_pending_age_seconds"] >= 0
    assert data["schema_version"] == "1"
    assert data["server_url"] == server.url
    assert data["mode"] == "real"
    assert data["counters"]["dead"] == 1
    assert data["size_bytes"] > 0 and data["wal_bytes"] is None
    assert data["not_before"] is None and data["last_error"] is None


def test_status_text_names_every_figure(
    filled: dict[str, Any], server: FakeTelemetryServer
) -> None:
    """status prints one labelled line per figure, including the server it belongs to."""
    code, text = run("status", "--outbox", str(filled["path"]))
    assert code == 0
    labels = [line.split()[0] for line in text.splitlines()]
    assert labels == [
        "outbox",
        "size",
        "schema",
        "server",
        "pending",
        "dead",
        "not",
        "last",
        "counters",
    ]
    assert f"server      {server.url}" in text
    assert "pending     4 (oldest tracked" in text
    assert "dead        1" in text


def test_status_reads_the_env_outbox_by_default(filled: dict[str, Any], env: Path) -> None:
    """Without --outbox, status reads the file the MOSAIC_TELEMETRY_* settings resolve to."""
    code, text = run("status", "--json")
    assert code == 0
    assert json.loads(text)["path"] == str(env)


def test_status_shows_leases_and_a_rate_limit_pause(filled: dict[str, Any]) -> None:
    """A live lease counts as leased, and a future not_before is shown as a pause."""
    outbox = SqliteOutbox(filled["path"])
    outbox.claim(LeaseOwner.for_this_process(), 2, 60.0)
    outbox.set_not_before(outbox._clock() + 600)
    try:
        data = json.loads(run("status", "--json", "--outbox", str(filled["path"]))[1])
        rows = json.loads(run("outbox", "list", "--json", "--outbox", str(filled["path"]))[1])
        text = run("status", "--outbox", str(filled["path"]))[1]
    finally:
        outbox.close()
    assert data["leased"] == 2
    assert data["not_before"] is not None
    assert [r["state"] for r in rows] == ["leased", "leased", "pending", "pending"]
    assert "sending paused" in text


# --- read-only, never modifying -----------------------------------------------------------------
@pytest.mark.parametrize("argv", INSPECTIONS, ids=" ".join)
def test_inspection_leaves_the_directory_byte_identical(
    argv: list[str], filled: dict[str, Any], env: Path
) -> None:
    """Inspecting a closed outbox (no -wal/-shm) changes no byte and creates no side file."""
    before = snapshot(env.parent)
    code, _ = run(*argv)
    assert code in (0, 1)  # show of an unknown id is 1; doctor may warn but not fail here
    assert snapshot(env.parent) == before


def test_reader_opens_read_only_with_a_uri(
    filled: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every connection the reader opens is a mode=ro URI."""
    seen: list[tuple[Any, ...]] = []
    real_connect = sqlite3.connect

    def spy(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        seen.append((args, kwargs))
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", spy)
    OutboxReader(filled["path"]).status()
    assert seen
    assert all(kw.get("uri") is True and "mode=ro" in args[0] for args, kw in seen)


def test_a_writer_appearing_during_an_unlocked_read_means_reading_again(
    filled: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If side files appear while the immutable read runs, the reader reads again under locks."""
    answers = iter([True, False, False])
    monkeypatch.setattr(OutboxReader, "_quiet", lambda self: next(answers))
    uris: list[str] = []
    real_connect = sqlite3.connect

    def spy(database: str, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        uris.append(database)
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", spy)
    assert OutboxReader(filled["path"]).status().pending == 4
    assert [u.rsplit("?", 1)[1] for u in uris] == ["mode=ro&immutable=1", "mode=ro"]


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


def test_status_while_another_process_holds_a_write_transaction(
    filled: dict[str, Any], tmp_path: Path
) -> None:
    """A writer holding an open write transaction neither blocks status nor leaks its rows."""
    outbox = SqliteOutbox(filled["path"])  # puts the file in use (WAL), as a running agent does
    script = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "conn.execute(\"INSERT INTO events (event_id, body, enqueued_at) VALUES ('x', '{}', 1)\")\n"
        "print('holding', flush=True)\n"
        "sys.stdin.readline()\n"
        "conn.execute('COMMIT')\n"
        "print('committed', flush=True)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(filled["path"])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "holding\n"
        code, text = run("status", "--json", "--outbox", str(filled["path"]))
        assert code == 0 and json.loads(text)["pending"] == 4  # the uncommitted row is unseen
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "committed\n"
        assert (
            json.loads(run("status", "--json", "--outbox", str(filled["path"]))[1])["pending"] == 5
        )
    finally:
        child.kill()
        child.wait()
        outbox.close()


def test_status_while_a_client_tracks_into_the_same_file(
    make_config: Any, clients: list[TelemetryClient]
) -> None:
    """status runs again and again while a client writes the same file, and sees its progress."""
    client = TelemetryClient(make_config())
    clients.append(client)
    path = str(client.stats()["outbox_path"])
    done = threading.Event()

    def track() -> None:
        for event in make_events(150):
            client.track(event)
        done.set()

    writer = threading.Thread(target=track)
    writer.start()
    seen = []
    while not done.is_set() or not seen:
        code, text = run("status", "--json", "--outbox", path)
        assert code == 0
        seen.append(json.loads(text)["pending"])
    writer.join()
    seen.append(json.loads(run("status", "--json", "--outbox", path)[1])["pending"])
    assert seen == sorted(seen) and seen[-1] == 150


# --- outbox list / show / export ------------------------------------------------------------------
def test_list_json_is_a_list_of_rows_without_bodies(filled: dict[str, Any]) -> None:
    """outbox list --json is a JSON list of rows oldest first, with state and no body."""
    code, text = run("outbox", "list", "--json", "--outbox", str(filled["path"]))
    rows = json.loads(text)
    assert code == 0 and isinstance(rows, list)
    assert [r["event_id"] for r in rows] == filled["pending"]
    assert all(r["state"] == "pending" and "body" not in r for r in rows)
    assert {"id", "attempts", "enqueued_at", "next_attempt_at", "lease_owner"} <= set(rows[0])


def test_list_limit_and_its_footer(filled: dict[str, Any]) -> None:
    """--limit N shows the oldest N and says how many there are in all."""
    code, text = run("outbox", "list", "--limit", "2", "--outbox", str(filled["path"]))
    assert code == 0
    assert filled["pending"][0] in text and filled["pending"][2] not in text
    assert "(showing 2 of 4; --limit 0 shows all)" in text
    assert (
        len(
            json.loads(
                run("outbox", "list", "--json", "--limit", "1", "--outbox", str(filled["path"]))[1]
            )
        )
        == 1
    )


def test_list_dead_shows_the_reason(filled: dict[str, Any]) -> None:
    """outbox list --dead lists the dead letters with HTTP status and reason."""
    code, text = run("outbox", "list", "--dead", "--outbox", str(filled["path"]))
    assert code == 0
    assert filled["dead"] in text and "403" in text and "bad key fixed later" in text
    rows = json.loads(run("outbox", "list", "--dead", "--json", "--outbox", str(filled["path"]))[1])
    assert [(r["event_id"], r["state"], r["http_status"]) for r in rows] == [
        (filled["dead"], "dead", 403)
    ]


def test_list_of_an_empty_table_says_so(filled: dict[str, Any]) -> None:
    """An empty listing prints a sentence, and [] with --json."""
    run("outbox", "purge", "--dead", "--yes", "--outbox", str(filled["path"]))
    assert (
        "no dead events in" in run("outbox", "list", "--dead", "--outbox", str(filled["path"]))[1]
    )
    assert (
        json.loads(run("outbox", "list", "--dead", "--json", "--outbox", str(filled["path"]))[1])
        == []
    )


def test_show_prints_the_stored_json_pretty(filled: dict[str, Any]) -> None:
    """outbox show prints the row and the stored event JSON, indented; --json is one object."""
    event_id = filled["pending"][0]
    code, text = run("outbox", "show", event_id, "--outbox", str(filled["path"]))
    assert code == 0
    assert "state            pending" in text
    assert f'  "event_id": "{event_id}",' in text
    obj = json.loads(run("outbox", "show", event_id, "--json", "--outbox", str(filled["path"]))[1])
    assert obj["state"] == "pending" and obj["event"]["event_id"] == event_id and "body" not in obj
    dead = json.loads(
        run("outbox", "show", filled["dead"], "--json", "--outbox", str(filled["path"]))[1]
    )
    assert dead["state"] == "dead" and dead["reason"] == "rejected by server: bad key fixed later"


def test_show_unknown_event_is_an_error(
    filled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """outbox show of an id that is neither pending nor dead exits 1 with one line."""
    assert run("outbox", "show", "nope", "--outbox", str(filled["path"]))[0] == 1
    assert capsys.readouterr().err == (
        f"mosaic-telemetry: error: no event nope in {filled['path']} (neither pending nor dead)\n"
    )


def test_export_writes_one_event_per_line(filled: dict[str, Any]) -> None:
    """outbox export --format jsonl writes the stored events as JSON lines; --dead the dead ones."""
    code, text = run("outbox", "export", "--format", "jsonl", "--outbox", str(filled["path"]))
    assert code == 0
    assert [json.loads(line)["event_id"] for line in text.splitlines()] == filled["pending"]
    dead = run("outbox", "export", "--dead", "--outbox", str(filled["path"]))[1]
    assert [json.loads(line)["event_id"] for line in dead.splitlines()] == [filled["dead"]]


# --- requeue / purge ------------------------------------------------------------------------------
def test_requeue_then_flush_delivers_the_fixed_event(
    filled: dict[str, Any], env: Path, server: FakeTelemetryServer
) -> None:
    """A requeued dead letter is pending again with attempts reset, and the next flush sends it."""
    code, text = run("outbox", "requeue", filled["dead"])
    assert code == 0 and text.startswith("requeued 1 dead event(s)")
    row = OutboxReader(env).get_row(filled["dead"])
    assert row is not None
    assert (row["state"], row["attempts"], row["next_attempt_at"]) == ("pending", 0, 0)
    assert run("flush")[0] == 0
    assert filled["dead"] in server.event_ids_received
    assert json.loads(run("status", "--json")[1])["pending"] == 0


def test_requeue_all_json(filled: dict[str, Any]) -> None:
    """requeue --all moves every dead letter; --json reports the count."""
    code, text = run("outbox", "requeue", "--all", "--json", "--outbox", str(filled["path"]))
    assert code == 0 and json.loads(text) == {"path": str(filled["path"]), "requeued": 1}
    status = OutboxReader(filled["path"]).status()
    assert (status.pending, status.dead) == (5, 0)


def test_requeue_unknown_id_changes_nothing(
    filled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """requeue refuses ids that are not dead letters and then requeues none of the others."""
    before = snapshot(filled["path"].parent)
    code, _ = run("outbox", "requeue", filled["dead"], "not-there", "--outbox", str(filled["path"]))
    assert code == 1
    assert "not in the dead-letter table" in capsys.readouterr().err
    assert snapshot(filled["path"].parent) == before


@pytest.mark.parametrize("extra", [[], ["--all", "x"]], ids=["neither", "both"])
def test_requeue_needs_ids_or_all(
    extra: list[str], filled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """requeue with neither or both of EVENT_ID and --all is a usage error (exit 2)."""
    assert run("outbox", "requeue", *extra, "--outbox", str(filled["path"]))[0] == 2
    assert "give EVENT_ID ... or --all" in capsys.readouterr().err


def test_purge_refuses_without_yes(
    filled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """purge without --yes deletes nothing, says how much it would delete, exits 2."""
    before = snapshot(filled["path"].parent)
    assert run("outbox", "purge", "--all", "--outbox", str(filled["path"]))[0] == 2
    assert "deletes 5 dead and pending event(s)" in capsys.readouterr().err
    assert snapshot(filled["path"].parent) == before
    assert run("outbox", "purge", "--outbox", str(filled["path"]), "--yes")[0] == 2


def test_purge_dead_then_all(filled: dict[str, Any]) -> None:
    """purge --dead removes only dead letters; purge --all removes the rest."""
    code, text = run("outbox", "purge", "--dead", "--yes", "--outbox", str(filled["path"]))
    assert code == 0 and text.startswith("purged 1 dead event(s)")
    status = OutboxReader(filled["path"]).status()
    assert (status.pending, status.dead) == (4, 0)
    code, text = run("outbox", "purge", "--all", "--yes", "--json", "--outbox", str(filled["path"]))
    assert code == 0 and json.loads(text)["purged"] == 4
    assert OutboxReader(filled["path"]).status().pending == 0


# --- flush ----------------------------------------------------------------------------------------
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


# --- predict --------------------------------------------------------------------------------------
def test_predict_prints_a_table_and_json(env: Path, server: FakeTelemetryServer) -> None:
    """predict queries the server and prints the distribution as a table, or one JSON object."""
    server.set_prediction(
        {
            "task_type": "implementation",
            "model": "claude-sonnet-4-5-20250929",
            "provider": "anthropic",
            "complexity": "medium",
        },
        ANSWER,
    )
    code, text = run(*PREDICT)
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "implementation / claude-sonnet-4-5-20250929 / anthropic / medium"
    assert lines[1].split() == ["p10", "p25", "median", "p75", "p90"]
    assert lines[2].split() == ["input", "tokens", "50000", "80000", "110000", "140000", "190000"]
    assert lines[4].split() == ["cost", "(USD)", "0.91", "1.50"]
    assert "1200 samples, confidence high" in text
    code, text = run(*PREDICT, "--json")
    data = json.loads(text)
    assert code == 0
    assert data["query"]["model"] == "claude-sonnet-4-5-20250929"
    assert data["prediction"]["input_tokens"]["median"] == 110000
    assert data["metadata"]["sample_size"] == 1200
    assert server.prediction_queries[-1]["task_type"] == "implementation"


def test_predict_without_data_says_so(env: Path) -> None:
    """A combination the server knows nothing about is an answer, not an error."""
    code, text = run(*PREDICT)
    assert code == 0
    assert "no prediction for this combination yet (0 samples; no data)" in text


def test_predict_with_the_server_down_is_one_error_line(
    env: Path, server: FakeTelemetryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """predict against a stopped server exits 1 with the transport's reason on one line."""
    server.stop()
    code, text = run(*PREDICT)
    err = capsys.readouterr().err
    assert code == 1 and text == ""
    assert err.startswith("mosaic-telemetry: error: no prediction: prediction refresh failed")
    assert err.count("\n") == 1


def test_predict_rejects_unknown_enum_values(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown --provider is a usage error listing the choices."""
    argv = [*PREDICT]
    argv[argv.index("anthropic")] = "acme"
    assert run(*argv)[0] == 2
    assert "invalid choice: 'acme'" in capsys.readouterr().err


# --- doctor ---------------------------------------------------------------------------------------
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


# --- usage, --debug, entry points -----------------------------------------------------------------
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
    script = shutil.which("mosaic-telemetry")
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


def test_demo_still_delivers() -> None:
    """The demo command tracks into a temp outbox and delivers everything."""
    code, text = run("demo", "--events", "3")
    assert code == 0
    assert "flushed: delivered 3, remaining 0; the server stored 3 events" in text


@pytest.fixture(autouse=True)
def _sdk_logger_restored() -> Iterator[None]:
    """main() leaves the mosaic_telemetry logger as it found it."""
    import logging

    logger = logging.getLogger("mosaic_telemetry")
    handlers, level = list(logger.handlers), logger.level
    yield
    assert (list(logger.handlers), logger.level) == (handlers, level)


def test_docs_describe_every_column_key_and_command(tmp_path: Path) -> None:
    """docs/cli.md names every column and meta key a fresh outbox has, and every command."""
    from mosaic_telemetry._store import META_LAST_ERROR, TABLES
    from mosaic_telemetry.cli import build_parser

    docs = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
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
