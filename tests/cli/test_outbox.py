"""``outbox list|show|export`` (read-only) and ``outbox requeue|purge`` (repair)."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry._store import LeaseOwner, OutboxReader, SqliteOutbox
from mosaic_telemetry._wire.events import event_to_json
from mosaic_telemetry.testing import FakeTelemetryServer

from ..helpers import make_event, make_events
from .support import run, snapshot


# --- list -----------------------------------------------------------------------------------
def test_list_json_is_a_list_of_rows_without_bodies(filled: dict[str, Any]) -> None:
    """outbox list --json is a JSON list of rows oldest first, with state and no body."""
    code, text = run("outbox", "list", "--json", "--outbox", str(filled["path"]))
    rows = json.loads(text)
    assert code == 0 and isinstance(rows, list)
    assert [r["event_id"] for r in rows] == filled["pending"]
    assert all(r["state"] == "pending" and "body" not in r for r in rows)
    assert {"id", "attempts", "enqueued_at", "next_attempt_at", "lease_owner"} <= set(rows[0])


def test_list_text_shows_state_and_age(filled: dict[str, Any]) -> None:
    """outbox list prints a table: id, event id, state and the age of each event."""
    code, text = run("outbox", "list", "--outbox", str(filled["path"]))
    lines = text.splitlines()
    assert code == 0
    assert lines[0].split() == ["ID", "EVENT_ID", "STATE", "AGE", "ATTEMPTS", "NOTE"]
    assert [line.split()[1] for line in lines[1:]] == filled["pending"]
    assert all(re.search(r" pending +1 h \d+ min +0$", line) for line in lines[1:]), text


def test_list_limit_and_its_hint_on_stderr(
    filled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """--limit N shows the oldest N; how many there are in all is a hint on stderr, not data."""
    code, text = run("outbox", "list", "--limit", "2", "--outbox", str(filled["path"]))
    assert code == 0
    assert [line.split()[1] for line in text.splitlines()[1:]] == filled["pending"][:2]
    assert capsys.readouterr().err == (
        "(showing 2 of 4; --offset 2 shows the next; --limit 0 shows all)\n"
    )
    one = run("outbox", "list", "--json", "--limit", "1", "--outbox", str(filled["path"]))[1]
    assert len(json.loads(one)) == 1
    assert capsys.readouterr().err.startswith("(showing 1 of 4;")


def test_list_offset_pages_through(
    filled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """--offset N skips the oldest N; the hint says which rows of how many were shown."""
    argv = ["outbox", "list", "--json", "--outbox", str(filled["path"])]
    pages = []
    for offset in (0, 2, 4):
        pages.append(json.loads(run(*argv, "--limit", "2", "--offset", str(offset))[1]))
    assert [[r["event_id"] for r in page] for page in pages] == [
        filled["pending"][:2],
        filled["pending"][2:],
        [],
    ]
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "(showing 2 of 4; --offset 2 shows the next; --limit 0 shows all)",
        "(showing rows 3-4 of 4)",
        "(nothing after --offset 4: 4 in all)",
    ]
    code, text = run("outbox", "list", "--offset", "3", "--outbox", str(filled["path"]))
    assert (
        code == 0 and [line.split()[1] for line in text.splitlines()[1:]] == filled["pending"][3:]
    )


def test_list_status_selects_pending_leased_or_dead(
    filled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """--status leased lists rows being sent, pending the others, dead the dead letters."""
    outbox = SqliteOutbox(filled["path"])
    outbox.claim(LeaseOwner.for_this_process(), 1, 60.0)
    try:
        argv = ["outbox", "list", "--json", "--outbox", str(filled["path"])]
        states = {
            state: [r["event_id"] for r in json.loads(run(*argv, "--status", state)[1])]
            for state in ("pending", "leased", "dead")
        }
        dead_flag = [r["event_id"] for r in json.loads(run(*argv, "--dead")[1])]
        text = run("outbox", "list", "--status", "leased", "--outbox", str(filled["path"]))[1]
    finally:
        outbox.close()
    assert states == {
        "pending": filled["pending"][1:],
        "leased": filled["pending"][:1],
        "dead": [filled["dead"]],
    }
    assert dead_flag == states["dead"]
    assert f"leased by pid {os.getpid()}" in text
    capsys.readouterr()
    assert run(*argv, "--dead", "--status", "pending")[0] == 2
    assert "--dead and --status pending select different rows" in capsys.readouterr().err
    assert run(*argv, "--status", "lost")[0] == 2


def test_list_since_keeps_the_newer_events(
    filled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """--since WHEN (an age, ISO 8601 or epoch seconds) lists events tracked at or after it."""
    outbox = SqliteOutbox(filled["path"], server_url=filled["server_url"])
    new = make_events(2)
    for event in new:
        outbox.add(str(event.event_id), event_to_json(event))
    outbox.close()
    argv = ["outbox", "list", "--json", "--outbox", str(filled["path"])]
    half_hour_ago = datetime.now(timezone.utc) - timedelta(minutes=30)
    for when in ("30m", "0.5h", half_hour_ago.strftime("%Y-%m-%dT%H:%M:%SZ")):
        rows = json.loads(run(*argv, "--since", when)[1])
        assert [r["event_id"] for r in rows] == [str(e.event_id) for e in new], when
    everything = json.loads(run(*argv, "--since", str(filled["tracked_at"] - 1))[1])
    assert len(everything) == 6
    dead = json.loads(run(*argv, "--dead", "--since", "30m")[1])
    assert dead == []  # dead-lettered an hour ago
    assert capsys.readouterr().err.startswith("(no dead events since ")
    assert run(*argv, "--since", "yesterday")[0] == 2
    assert "not a time: 'yesterday' (give an ISO 8601 time" in capsys.readouterr().err


def test_list_dead_shows_the_reason(filled: dict[str, Any]) -> None:
    """outbox list --dead lists the dead letters with HTTP status and reason."""
    code, text = run("outbox", "list", "--dead", "--outbox", str(filled["path"]))
    assert code == 0
    assert filled["dead"] in text and "403" in text and "bad key fixed later" in text
    rows = json.loads(run("outbox", "list", "--dead", "--json", "--outbox", str(filled["path"]))[1])
    assert [(r["event_id"], r["state"], r["http_status"]) for r in rows] == [
        (filled["dead"], "dead", 403)
    ]


def test_list_of_an_empty_table_says_so_on_stderr(
    filled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty listing prints nothing (text) or [] (--json) and says so on stderr."""
    run("outbox", "purge", "--dead", "--yes", "--outbox", str(filled["path"]))
    capsys.readouterr()
    assert run("outbox", "list", "--dead", "--outbox", str(filled["path"])) == (0, "")
    assert capsys.readouterr().err == f"(no dead events in {filled['path']})\n"
    data = run("outbox", "list", "--dead", "--json", "--outbox", str(filled["path"]))[1]
    assert json.loads(data) == []


# --- show -----------------------------------------------------------------------------------
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


def test_show_takes_a_unique_prefix_like_git(filled: dict[str, Any]) -> None:
    """A unique start of an event id (any case), pending or dead, shows that event."""
    for event_id in (filled["pending"][2], filled["dead"]):
        for prefix in (event_id[:8], event_id[:8].upper(), event_id[:13]):
            code, text = run("outbox", "show", prefix, "--json", "--outbox", str(filled["path"]))
            assert code == 0, prefix
            assert json.loads(text)["event_id"] == event_id


def test_an_ambiguous_prefix_names_the_candidates(
    outbox_path: Path, server: FakeTelemetryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A prefix two events share exits 1 naming both; a prefix none has exits 1 too."""
    outbox = SqliteOutbox(outbox_path, server_url=server.url)
    ids = ["abcd1234-0000-4000-8000-000000000001", "abcd5678-0000-4000-8000-000000000002"]
    for event_id in ids:
        outbox.add(event_id, event_to_json(make_event(event_id=event_id)))
    outbox.close()
    assert run("outbox", "show", "abcd", "--outbox", str(outbox_path))[0] == 1
    assert capsys.readouterr().err == (
        f"mosaic-telemetry: error: event id prefix 'abcd' is ambiguous in {outbox_path}: it "
        f"starts {ids[0]}, {ids[1]}; give more characters\n"
    )
    assert (
        json.loads(run("outbox", "show", "abcd5", "--json", "--outbox", str(outbox_path))[1])[
            "event_id"
        ]
        == ids[1]
    )
    for missing in ("abce", "abcd[", "*", ""):
        assert run("outbox", "show", missing, "--outbox", str(outbox_path))[0] == 1, missing
        assert "(neither pending nor dead)" in capsys.readouterr().err


# --- export ---------------------------------------------------------------------------------
def test_export_writes_one_event_per_line(filled: dict[str, Any]) -> None:
    """outbox export --format jsonl writes the stored events as JSON lines; --dead the dead ones."""
    code, text = run("outbox", "export", "--format", "jsonl", "--outbox", str(filled["path"]))
    assert code == 0
    assert [json.loads(line)["event_id"] for line in text.splitlines()] == filled["pending"]
    dead = run("outbox", "export", "--dead", "--outbox", str(filled["path"]))[1]
    assert [json.loads(line)["event_id"] for line in dead.splitlines()] == [filled["dead"]]


def test_export_json_is_one_list_of_the_same_events(filled: dict[str, Any]) -> None:
    """export --json (or --format json) prints one JSON list of exactly the JSON lines' events."""
    path = str(filled["path"])
    lines = [json.loads(line) for line in run("outbox", "export", "--outbox", path)[1].splitlines()]
    for argv in (["--json"], ["--format", "json"]):
        code, text = run("outbox", "export", *argv, "--outbox", path)
        assert code == 0 and json.loads(text) == lines
    dead = json.loads(run("outbox", "export", "--dead", "--json", "--outbox", path)[1])
    assert [e["event_id"] for e in dead] == [filled["dead"]]
    run("outbox", "purge", "--all", "--yes", "--outbox", path)
    assert run("outbox", "export", "--json", "--outbox", path) == (0, "[]\n")


# --- requeue --------------------------------------------------------------------------------
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


# --- purge ----------------------------------------------------------------------------------
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
