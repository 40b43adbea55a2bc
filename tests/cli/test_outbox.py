"""``outbox list|show|export`` (read-only) and ``outbox requeue|purge`` (repair)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry._store import OutboxReader
from mosaic_telemetry.testing import FakeTelemetryServer

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


def test_list_limit_and_its_footer(filled: dict[str, Any]) -> None:
    """--limit N shows the oldest N and says how many there are in all."""
    code, text = run("outbox", "list", "--limit", "2", "--outbox", str(filled["path"]))
    assert code == 0
    assert filled["pending"][0] in text and filled["pending"][2] not in text
    assert "(showing 2 of 4; --limit 0 shows all)" in text
    one = run("outbox", "list", "--json", "--limit", "1", "--outbox", str(filled["path"]))[1]
    assert len(json.loads(one)) == 1


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
    text = run("outbox", "list", "--dead", "--outbox", str(filled["path"]))[1]
    assert text == f"no dead events in {filled['path']}\n"
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


# --- export ---------------------------------------------------------------------------------
def test_export_writes_one_event_per_line(filled: dict[str, Any]) -> None:
    """outbox export --format jsonl writes the stored events as JSON lines; --dead the dead ones."""
    code, text = run("outbox", "export", "--format", "jsonl", "--outbox", str(filled["path"]))
    assert code == 0
    assert [json.loads(line)["event_id"] for line in text.splitlines()] == filled["pending"]
    dead = run("outbox", "export", "--dead", "--outbox", str(filled["path"]))[1]
    assert [json.loads(line)["event_id"] for line in dead.splitlines()] == [filled["dead"]]


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
