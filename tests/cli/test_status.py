"""``status``: counts, ages, identity; read-only while agents write the same file."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry import TelemetryClient
from mosaic_telemetry._store import LeaseOwner, OutboxReader, SqliteOutbox, presence
from mosaic_telemetry._wire.events import event_to_json
from mosaic_telemetry.cli.status import ledger_line
from mosaic_telemetry.testing import FakeTelemetryServer

from ..helpers import make_events
from ..store_helpers import SPOOLER, ChildProgram
from .conftest import HOUR_AGO
from .support import run


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
    assert data["oldest_pending_age_seconds"] >= HOUR_AGO  # tracked an hour ago
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
        "spooled",
        "not",
        "last",
        "counters",
        "ledger",
    ]
    assert f"server      {server.url}" in text
    assert re.search(r"^pending     4 \(oldest tracked 1 h \d+ min ago\)", text, re.M), text
    assert "dead        1" in text
    assert "spooled     0\n" in text
    assert (
        "ledger      tracked 5 = delivered 0 + duplicates 0 + dead 1 + evicted 0 + purged 0"
        " + pending 4 + dry_run 0\n"
    ) in text


def test_status_reads_the_env_outbox_by_default(filled: dict[str, Any], env: Path) -> None:
    """Without --outbox, status reads the file the MOSAIC_TELEMETRY_* settings resolve to."""
    code, text = run("status", "--json")
    assert code == 0
    assert json.loads(text)["path"] == str(env)


def test_status_shows_leases_and_a_rate_limit_pause(filled: dict[str, Any]) -> None:
    """A live lease counts as leased, and a future not_before is shown as a pause."""
    outbox = SqliteOutbox(filled["path"])
    outbox.claim(LeaseOwner.for_this_process(), 2, 60.0)
    outbox.set_not_before(time.time() + 600)
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


def test_reader_opens_read_only_with_a_uri(
    filled: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every connection the reader opens is a mode=ro URI."""
    seen: list[tuple[Any, ...]] = []
    real_connect = sqlite3.connect

    def spy(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        seen.append((args, kwargs))
        conn: sqlite3.Connection = real_connect(*args, **kwargs)
        return conn

    monkeypatch.setattr(sqlite3, "connect", spy)
    assert run("status", "--outbox", str(filled["path"]))[0] == 0
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
        conn: sqlite3.Connection = real_connect(database, *args, **kwargs)
        return conn

    monkeypatch.setattr(sqlite3, "connect", spy)
    assert OutboxReader(filled["path"]).status().pending == 4
    assert [u.rsplit("?", 1)[1] for u in uris] == ["mode=ro&immutable=1", "mode=ro"]


def test_status_while_another_process_holds_a_write_transaction(filled: dict[str, Any]) -> None:
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
    seen: list[int] = []
    while not done.is_set() or not seen:
        code, text = run("status", "--json", "--outbox", path)
        assert code == 0
        seen.append(json.loads(text)["pending"])
    writer.join()
    seen.append(json.loads(run("status", "--json", "--outbox", path)[1])["pending"])
    assert seen == sorted(seen) and seen[-1] == 150


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default state directory (XDG_STATE_HOME on Linux), not created yet."""
    if sys.platform != "linux":
        pytest.skip("the state directory is moved with XDG_STATE_HOME on Linux only")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "mosaic-telemetry"


def test_status_all_lists_every_outbox_in_the_state_directory(
    state_dir: Path, server: FakeTelemetryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """status --all: one line per outbox file (path, pending, dead, size); exit 1 if one is bad."""
    real = SqliteOutbox(state_dir / "outbox-aaaa.sqlite3", server_url=server.url)
    for event in make_events(3):
        real.add(str(event.event_id), event_to_json(event))
    real.close()
    SqliteOutbox(
        state_dir / "outbox-bbbb.dry-run.sqlite3", server_url=server.url, dry_run=True
    ).close()
    (state_dir / "outbox-cccc.sqlite3").write_bytes(b"not a database at all\n" * 100)
    (state_dir / "outbox-dddd.sqlite3.corrupt-20261127T001102").write_bytes(b"moved aside")
    before = {p.name for p in state_dir.iterdir()}
    code, text = run("status", "--all")
    assert code == 1
    lines = [line.split() for line in text.splitlines()]
    assert lines[0] == ["PATH", "PENDING", "DEAD", "SIZE", "SERVER"]
    assert [line[:3] for line in lines[1:]] == [
        [str(state_dir / "outbox-aaaa.sqlite3"), "3", "0"],
        [str(state_dir / "outbox-bbbb.dry-run.sqlite3"), "0", "0"],
        [str(state_dir / "outbox-cccc.sqlite3"), "-", "-"],
    ]
    assert lines[1][-1] == server.url and lines[2][-3:] == [server.url, "(dry", "run)"]
    assert "unreadable:" in lines[3] and "KiB" in lines[1][4]
    assert capsys.readouterr().err == (
        "(1 corrupt file(s) moved aside there, not listed: "
        "outbox-dddd.sqlite3.corrupt-20261127T001102)\n"
    )
    entries = json.loads(run("status", "--all", "--json")[1])
    assert [(e["pending"], e["dead"], e["mode"], e["error"] is None) for e in entries] == [
        (3, 0, "real", True),
        (0, 0, "dry_run", True),
        (None, None, None, False),
    ]
    assert {p.name for p in state_dir.iterdir()} == before  # read-only: nothing created


def test_status_all_without_a_state_directory(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no outbox anywhere, status --all prints no data, says so on stderr and exits 0."""
    assert run("status", "--all") == (0, "")
    assert capsys.readouterr().err == f"(no outbox files in {state_dir})\n"
    assert run("status", "--all", "--json") == (0, "[]\n")
    assert not state_dir.exists()
    assert run("status", "--all", "--outbox", "x.sqlite3")[0] == 2


@pytest.mark.skipif(not presence.AVAILABLE, reason="spools need fcntl.flock")
def test_status_and_list_show_the_spool_of_a_process_killed_before_it_was_moved_in(
    filled: dict[str, Any],
) -> None:
    """Events a SIGKILLed process had only in its spool: status counts them with the spool's
    owner (dead), ``outbox list --status spooled`` lists them; the ledger still balances
    (they are written to the outbox only when the next process adopts the spool)."""
    path = str(filled["path"])
    child = ChildProgram(SPOOLER, path, "3")
    token = child.line().split()[0]
    code, alive = run("status", "--outbox", path)
    assert f"spooled     3 in 1 spool file(s): {token} (alive) 3\n" in alive
    child.kill()

    code, text = run("status", "--outbox", path)
    assert code == 0
    assert f"spooled     3 in 1 spool file(s): {token} (dead) 3\n" in text
    assert "pending     4 " in text and "DOES NOT BALANCE" not in text
    code, data = run("status", "--json", "--outbox", path)
    status = json.loads(data)
    assert status["spooled"] == 3
    assert [(s["token"], s["owner"], s["events"]) for s in status["spools"]] == [(token, "dead", 3)]

    code, listing = run("outbox", "list", "--status", "spooled", "--outbox", path)
    assert code == 0
    rows = [line.split() for line in listing.splitlines()[1:]]
    assert [(r[1], r[2], r[-1]) for r in rows] == [
        (f"spooled-{i}", "spooled", token) for i in range(3)
    ]
    code, page = run(
        "outbox",
        "list",
        "--status",
        "spooled",
        "--json",
        "--limit",
        "1",
        "--offset",
        "1",
        "--outbox",
        path,
    )
    assert [(r["event_id"], r["state"], r["spool"]) for r in json.loads(page)] == [
        ("spooled-1", "spooled", token)
    ]
    code, none = run("outbox", "list", "--status", "spooled", "--since", "0s", "--outbox", path)
    assert (code, none) == (0, "")


def test_a_ledger_that_does_not_balance_says_so_with_the_difference() -> None:
    """A file edited by hand (rows deleted with sqlite3) shows how many events are unaccounted."""
    figures = {"tracked": 7, "delivered": 3, "pending": 2, "dead": 0}
    assert ledger_line(figures) == (
        "tracked 7 = delivered 3 + pending 2 + dead 0: DOES NOT BALANCE (+2 unaccounted)"
    )
    assert ledger_line({**figures, "tracked": 5}) == "tracked 5 = delivered 3 + pending 2 + dead 0"
