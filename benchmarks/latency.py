"""Figures 1 to 3: ``build()`` + ``track()``, and ``track()`` alone, beside their floors.

Each round builds fresh example events, then runs every contender on them back to back (the
order rotates each round) and waits for background senders to finish before the next one
starts, so no contender pays for another's sending.

Contenders:
- ours, build + track: ``client.track(builder.build())`` with the example builder, on a
  started client with default settings (the worker drains in the background), except
  ``max_queue_size`` raised so a tight loop of calls measures ``track()`` rather than eviction
  at the bound; its floor: ``json.dumps`` of the wire dict + the raw insert below;
- ours: ``client.track(event)`` of a built event on the same kind of client;
- ours without a worker: the same on a client that was not started, so nothing drains
  meanwhile: the cost of ``track()`` itself, without the worker's share of the GIL and of the
  file's write lock;
- the floor: a raw ``sqlite3`` autocommit ``INSERT`` of the event id and the JSON text into
  ``(id INTEGER PRIMARY KEY, event_id TEXT UNIQUE, body TEXT)`` in a WAL database
  (``synchronous=NORMAL``, or ``FULL`` beside ``durability="full"``): the outbox's own
  shape (the UNIQUE key is what makes re-tracking an id a no-op), without the SDK;
- for information: the same insert without the UNIQUE key; ``json.dumps`` +
  ``queue.Queue.put_nowait``; persist-queue ``SQLiteAckQueue.put`` of the event dict (its
  defaults: WAL, ``synchronous=FULL``; and with ``synchronous=NORMAL``, the durability of
  ours); PostHog ``Client.capture`` and Segment ``Client.track`` with the event dict as
  properties (in memory; measured without waiting for their sends), their queues made large
  enough for a round, as ours is: a full queue drops events, which would only make their calls
  cheaper.

Every sender (ours, PostHog, Segment) sends to the same loopback sink (``sinks.py peer``).
"""

from __future__ import annotations

import json
import pathlib
import queue
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from common import (
    API_KEY,
    INSTANCE_ID,
    Sink,
    TaskCompletionEvent,
    TelemetryClient,
    client_config,
    example_event_builder,
    example_events,
    peer_available,
    summary,
    time_each,
)

from mosaic_telemetry._wire.events import event_to_dict, event_to_json


@attrs.define
class Contender:
    """One thing timed per call: ``call(item)`` for each item ``prepare(events)`` returns."""

    key: str
    label: str
    prepare: Callable[[list[TaskCompletionEvent]], Sequence[Any]]
    call: Callable[[Any], object]
    settle: Callable[[], None] = lambda: None  # after a round: wait for background sends
    close: Callable[[], None] = lambda: None
    rounds: list[dict[str, float]] = attrs.Factory(list)


def _pairs(events: list[TaskCompletionEvent]) -> list[tuple[str, str]]:
    return [(str(e.event_id), event_to_json(e)) for e in events]


def _dicts(events: list[TaskCompletionEvent]) -> list[dict[str, Any]]:
    return [event_to_dict(e) for e in events]


def _started(sink: Sink, outbox: pathlib.Path, durability: str) -> tuple[TelemetryClient, Any]:
    client = TelemetryClient(
        client_config(sink.url, outbox, durability=durability, max_queue_size=1_000_000)
    )
    client.start()

    def settle() -> None:
        client.flush(timeout=120)
        sink.reset()

    return client, settle


def ours(sink: Sink, folder: pathlib.Path, durability: str) -> Contender:
    client, settle = _started(sink, folder / f"ours-{durability}.sqlite3", durability)
    return Contender(
        "ours", f"ours, durability={durability!r}", list, client.track, settle, client.stop
    )


def ours_build(sink: Sink, folder: pathlib.Path) -> Contender:
    client, settle = _started(sink, folder / "ours-build.sqlite3", "normal")
    builder = example_event_builder(INSTANCE_ID)

    def call(item: object) -> None:
        client.track(builder.build())  # a fresh event id and timestamp each call

    return Contender(
        "ours_build",
        "ours, build() + track()",
        lambda events: [None] * len(events),
        call,
        settle,
        client.stop,
    )


def ours_idle(folder: pathlib.Path, durability: str) -> Contender:
    outbox = folder / f"ours-idle-{durability}.sqlite3"
    client = TelemetryClient(
        client_config("http://127.0.0.1:9", outbox, durability=durability, max_queue_size=1_000_000)
    )
    label = f"ours, durability={durability!r}, client not started (no worker)"
    return Contender("ours_idle", label, list, client.track)


def _floor_db(path: pathlib.Path, synchronous: str, unique: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    key = "event_id TEXT NOT NULL UNIQUE" if unique else "event_id TEXT NOT NULL"
    conn.execute(f"CREATE TABLE events (id INTEGER PRIMARY KEY, {key}, body TEXT NOT NULL)")
    return conn


_INSERT = "INSERT INTO events (event_id, body) VALUES (?, ?)"


def floor_unique(folder: pathlib.Path, synchronous: str) -> Contender:
    conn = _floor_db(folder / f"floor-unique-{synchronous}.sqlite3", synchronous, unique=True)
    return Contender(
        "floor_unique",
        f"raw INSERT, UNIQUE text key, WAL, synchronous={synchronous}",
        _pairs,
        lambda pair: conn.execute(_INSERT, pair),
        close=conn.close,
    )


def floor_plain(folder: pathlib.Path, synchronous: str) -> Contender:
    conn = _floor_db(folder / f"floor-plain-{synchronous}.sqlite3", synchronous, unique=False)
    return Contender(
        "floor_plain",
        f"raw INSERT, no UNIQUE key, synchronous={synchronous}",
        _pairs,
        lambda pair: conn.execute(_INSERT, pair),
        close=conn.close,
    )


def floor_build(folder: pathlib.Path) -> Contender:
    conn = _floor_db(folder / "floor-build.sqlite3", "NORMAL", unique=True)
    dumps = json.dumps

    def call(item: dict[str, Any]) -> None:
        conn.execute(_INSERT, (item["event_id"], dumps(item)))

    return Contender(
        "floor_build",
        "json.dumps(wire dict) + raw INSERT, UNIQUE text key",
        _dicts,
        call,
        close=conn.close,
    )


def floor_queue() -> Contender:
    q: queue.Queue[str] = queue.Queue()
    dumps = json.dumps

    def call(item: dict[str, Any]) -> None:
        q.put_nowait(dumps(item, separators=(",", ":"), ensure_ascii=False))

    def settle() -> None:
        while not q.empty():
            q.get_nowait()

    label = "json.dumps + Queue.put_nowait"
    return Contender("floor_queue", label, _dicts, call, settle)


def persist_queue(folder: pathlib.Path, synchronous: str | None) -> Contender:
    from persistqueue import SQLiteAckQueue

    name = "defaults" if synchronous is None else f"synchronous={synchronous}"
    q = SQLiteAckQueue(str(folder / f"pq-{name.replace('=', '-')}"))
    putter: Any = q._putter  # its own connection (persist-queue types it as optional)
    if synchronous is not None:
        # Equal durability: its own connection, set as ours is (WAL is its default already).
        putter.execute(f"PRAGMA synchronous = {synchronous}")
    mode = putter.execute("PRAGMA synchronous").fetchone()[0]
    label = f"persist-queue SQLiteAckQueue.put ({name}: WAL, synchronous={mode})"
    key = "pq_defaults" if synchronous is None else "pq_equal"
    return Contender(key, label, _dicts, q.put, close=q.close)


def posthog_peer(sink: Sink, calls: int) -> Contender:
    import posthog

    client = posthog.Client("phc_benchmark", host=sink.url, max_queue_size=calls + 1)

    def call(item: dict[str, Any]) -> None:
        client.capture("task_completed", distinct_id=INSTANCE_ID, properties=item)

    def settle() -> None:
        client.flush(timeout_seconds=120)

    return Contender(
        "posthog", "PostHog Client.capture (in memory)", _dicts, call, settle, client.shutdown
    )


def segment_peer(sink: Sink, calls: int) -> Contender:
    from segment.analytics import Client

    client = Client(API_KEY, host=sink.url, max_queue_size=calls + 1)

    def call(item: dict[str, Any]) -> None:
        client.track(user_id=INSTANCE_ID, event="task_completed", properties=item)

    return Contender(
        "segment",
        "Segment Client.track (in memory)",
        _dicts,
        call,
        client.flush,
        client.shutdown,
    )


def measure(contenders: list[Contender], calls: int, rounds: int) -> None:
    """Run every contender ``calls`` times per round, back to back; fills ``.rounds``."""
    for r in range(rounds):
        events = example_events(calls)
        order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
        if r % 2:
            order.reverse()
        for contender in order:
            items = contender.prepare(events)
            contender.rounds.append(summary(time_each(contender.call, items)))
            contender.settle()


def run(
    *,
    durability: str,
    calls: int,
    rounds: int,
    folder: pathlib.Path,
    sink: Sink,
    peers: bool = True,
) -> tuple[dict[str, Contender], dict[str, str]]:
    """Measure one durability mode; returns the contenders by key and skipped peers."""
    synchronous = {"normal": "NORMAL", "full": "FULL"}[durability]
    contenders = [
        ours(sink, folder, durability),
        floor_unique(folder, synchronous),
        ours_idle(folder, durability),
        floor_plain(folder, synchronous),
    ]
    skipped: dict[str, str] = {}
    if durability == "normal":
        contenders += [ours_build(sink, folder), floor_build(folder), floor_queue()]
    if peers and peer_available("persist-queue"):
        contenders.append(persist_queue(folder, None))
        if durability == "normal":
            contenders.append(persist_queue(folder, "NORMAL"))
    elif peers:
        skipped["persist-queue"] = "skipped (not installed)"
    if peers and durability == "normal":
        in_memory = (("posthog", posthog_peer), ("segment-analytics-python", segment_peer))
        for distribution, make in in_memory:
            if peer_available(distribution):
                contenders.append(make(sink, calls))
            else:
                skipped[distribution] = "skipped (not installed)"
    try:
        measure(contenders, calls, rounds)
    finally:
        for contender in contenders:
            contender.close()
    return {c.key: c for c in contenders}, skipped
