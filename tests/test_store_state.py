"""Tests of the outbox state (``_store/state.py``): counts, counters, meta, predictions, rows."""

from __future__ import annotations

import pytest

from .store_helpers import (
    LEASE,
    Factory,
    FakeClock,
    fill,
    owner,
    row_of,
)

pytest_plugins = ["tests.store_fixtures"]


def test_oldest_pending_age_follows_the_clock(make: Factory, clock: FakeClock) -> None:
    """oldest_pending_age() is None when empty and the oldest row's age otherwise."""
    outbox = make()
    assert outbox.oldest_pending_age() is None
    fill(outbox, 1)
    clock.advance(12.5)
    fill(outbox, 1, prefix="later")
    assert outbox.oldest_pending_age() == pytest.approx(12.5)


def test_counters_persist_across_reopen(open_sqlite: Factory) -> None:
    """Counters live in the file, so a new instance (a restart) sees them."""
    first = open_sqlite(max_pending=1)
    fill(first, 1)
    first.add("e1", "{}")
    rows = first.claim(owner("a"), 1, LEASE)
    first.ack([r.row_id for r in rows])
    first.bump("retried", 4)
    first.close()
    counters = open_sqlite().counters()
    assert {k: counters[k] for k in ("delivered", "evicted", "retried")} == {
        "delivered": 1,
        "evicted": 1,
        "retried": 4,
    }


def test_not_before_is_shared_by_instances_on_one_file(open_sqlite: Factory) -> None:
    """set_not_before() on one instance is seen by another process's instance of the file."""
    first, second = open_sqlite(), open_sqlite()
    assert second.get_not_before() == 0.0
    first.set_not_before(1_700_000_123.5)
    assert second.get_not_before() == 1_700_000_123.5


def test_meta_get_set_and_protected_keys(make: Factory) -> None:
    """get_meta/set_meta store text; the identity keys cannot be overwritten."""
    outbox = make(server_url="https://t.example", dry_run=True)
    assert outbox.get_meta("schema_version") == "1"
    assert outbox.get_meta("mode") == "dry_run"
    assert outbox.get_meta("server_url") == "https://t.example"
    assert outbox.get_meta("missing") is None
    outbox.set_meta("note", "hello")
    assert outbox.get_meta("note") == "hello"
    with pytest.raises(ValueError, match="managed"):
        outbox.set_meta("mode", "real")


def test_server_url_first_writer_wins(open_sqlite: Factory) -> None:
    """server_url reports the URL recorded when the file was created, not the caller's."""
    assert open_sqlite(server_url="https://first").server_url == "https://first"
    assert open_sqlite(server_url="https://second").server_url == "https://first"


def test_predictions_save_and_load(make: Factory) -> None:
    """save_prediction() replaces by key and load_predictions() returns them all."""
    outbox = make()
    outbox.save_prediction("k2", '{"b": 1}', 10.0)
    outbox.save_prediction("k1", '{"a": 1}', 11.0)
    outbox.save_prediction("k2", '{"b": 2}', 12.0)
    assert outbox.load_predictions() == [("k1", '{"a": 1}', 11.0), ("k2", '{"b": 2}', 12.0)]


def test_predictions_persist_across_reopen(open_sqlite: Factory) -> None:
    """A prediction saved by one instance is loaded by the next."""
    open_sqlite().save_prediction("k", "{}", 5.0)
    assert open_sqlite().load_predictions() == [("k", "{}", 5.0)]


def test_checkpoint_is_harmless(make: Factory) -> None:
    """checkpoint() can run at any time and keeps the rows."""
    outbox = make()
    fill(outbox, 3)
    outbox.checkpoint()
    assert outbox.pending_count() == 3


def test_list_rows_and_get_row(make: Factory) -> None:
    """list_rows() gives column-named dicts oldest first; get_row() adds the state."""
    outbox = make()
    fill(outbox, 3)
    rows = outbox.list_rows(limit=2)
    assert [r["event_id"] for r in rows] == ["e0", "e1"]
    assert set(rows[0]) == {
        "id",
        "event_id",
        "body",
        "enqueued_at",
        "attempts",
        "next_attempt_at",
        "lease_owner",
        "lease_host",
        "lease_pid",
        "lease_expires_at",
    }
    outbox.dead_letter([(rows[0]["id"], "bad", 400)])
    assert row_of(outbox, "e1")["state"] == "pending"
    dead = row_of(outbox, "e0")
    assert (dead["state"], dead["reason"]) == ("dead", "bad")
    assert set(outbox.list_rows(dead=True)[0]) == {
        "id",
        "event_id",
        "body",
        "enqueued_at",
        "dead_at",
        "attempts",
        "reason",
        "http_status",
    }
    assert outbox.get_row("nope") is None
