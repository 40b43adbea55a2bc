"""Figures 5 and 6: draining a full queue, beside PostHog and Segment; the test server's rate.

Drain, the same for the three senders: the peer sink (``sinks.py peer``, 200 ``{}`` to any
POST, the same fast server for all) is put on hold (it reads each request and answers none),
the sender is given ``count`` events (ours: ``track()``; PostHog: ``capture()``; Segment:
``track()``), so its first batch waits at the sink and the rest fill its queue (ours: the
outbox on disk; theirs: memory); then the sink is released and the clock runs until the
sender's ``flush()`` returns. The rate is ``count`` / those seconds; the sink's count of
received events is checked. Each sender uses its default batch size (ours and theirs: 100),
their queues made large enough that nothing is dropped.

The test server: ``benchmarks/fake_server.py``'s ``measure()``, how many events per second
``FakeTelemetryServer`` validates and stores from one keep-alive client; issue 15 wants at
least 3x our drain rate, so that it never bounds a figure of ours.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable
from typing import Any

from common import (
    API_KEY,
    INSTANCE_ID,
    Sink,
    TelemetryClient,
    client_config,
    example_events,
    peer_available,
)

from mosaic_telemetry._wire.events import event_to_dict

#: (distribution, key) of the peers measured beside ours.
PEERS = (("posthog", "posthog"), ("segment-analytics-python", "segment"))


def _timed_drain(
    sink: Sink, count: int, enqueue: Callable[[], None], flush: Callable[[], object]
) -> dict[str, float]:
    sink.reset()
    sink.hold()
    try:
        enqueue()
    finally:
        started = time.perf_counter()
        sink.release()
    flush()
    seconds = time.perf_counter() - started
    return {"rate": count / seconds, "seconds": seconds, "delivered": float(sink.count())}


def drain_ours(folder: pathlib.Path, sink: Sink, events: list[Any]) -> dict[str, float]:
    """Our drain of ``len(events)`` events queued in the outbox behind a held first batch."""
    outbox = folder / f"drain-{time.monotonic_ns()}.sqlite3"
    client = TelemetryClient(client_config(sink.url, outbox, max_queue_size=len(events)))
    client.start()
    try:

        def enqueue() -> None:
            for event in events:
                client.track(event)

        return _timed_drain(sink, len(events), enqueue, lambda: client.flush(timeout=600))
    finally:
        client.stop()


def drain_posthog(sink: Sink, dicts: list[dict[str, Any]]) -> dict[str, float]:
    import posthog

    client = posthog.Client("phc_benchmark", host=sink.url, max_queue_size=len(dicts) + 1)
    try:

        def enqueue() -> None:
            for item in dicts:
                client.capture("task_completed", distinct_id=INSTANCE_ID, properties=item)

        return _timed_drain(sink, len(dicts), enqueue, lambda: client.flush(timeout_seconds=600))
    finally:
        client.shutdown()


def drain_segment(sink: Sink, dicts: list[dict[str, Any]]) -> dict[str, float]:
    from segment.analytics import Client

    client = Client(API_KEY, host=sink.url, max_queue_size=len(dicts) + 1)
    try:

        def enqueue() -> None:
            for item in dicts:
                client.track(user_id=INSTANCE_ID, event="task_completed", properties=item)

        return _timed_drain(sink, len(dicts), enqueue, client.flush)
    finally:
        client.shutdown()


def _peer_measure(
    make: Callable[[Sink, list[dict[str, Any]]], dict[str, float]], sink: Sink
) -> Callable[[list[Any], list[dict[str, Any]]], dict[str, float]]:
    """A measure that hands a peer the event dicts (peers take no event objects)."""

    def measure(events: list[Any], dicts: list[dict[str, Any]]) -> dict[str, float]:
        return make(sink, dicts)

    return measure


def run(
    *, folder: pathlib.Path, sink: Sink, count: int, rounds: int
) -> tuple[dict[str, list[dict[str, float]]], dict[str, str]]:
    """Every drain figure, ``rounds`` times, the senders back to back (order rotating)."""
    measures: dict[str, Callable[[list[Any], list[dict[str, Any]]], dict[str, float]]] = {
        "ours": lambda events, dicts: drain_ours(folder, sink, events)
    }
    skipped: dict[str, str] = {}
    makers = {"posthog": drain_posthog, "segment": drain_segment}
    for distribution, key in PEERS:
        if peer_available(distribution):
            measures[key] = _peer_measure(makers[key], sink)
        else:
            skipped[distribution] = "skipped (not installed)"
    results: dict[str, list[dict[str, float]]] = {key: [] for key in measures}
    keys = list(measures)
    for r in range(rounds):
        events = example_events(count)
        dicts = [event_to_dict(e) for e in events]
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            results[key].append(measures[key](events, dicts))
    return results, skipped


def fake_server_rate(batches: int, rounds: int) -> dict[str, Any]:
    """``FakeTelemetryServer``'s storing rate (``benchmarks/fake_server.py``)."""
    import fake_server

    result: dict[str, Any] = fake_server.measure(batches, rounds)
    return result
