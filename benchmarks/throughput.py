"""Figure 3: delivery throughput on loopback.

- drain: ``count`` events already pending in the outbox (tracked by a client that was not
  started) are delivered by ``start()`` + ``flush()`` to ``FakeTelemetryServer`` (which
  validates and stores every event); the rate is events / elapsed seconds.
- end to end, beside the peers: ``count`` events tracked by a started client and delivered,
  from the first call until ``flush()`` returns, against PostHog ``capture`` and Segment
  ``track`` of the same number of events until their ``flush()`` returns; all three send to
  the same loopback sink (``sinks.py peer``), with their default batch sizes (their queues
  made large enough that nothing is dropped).
"""

from __future__ import annotations

import pathlib
import time
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


def drain(folder: pathlib.Path, fake: Sink, count: int) -> dict[str, float]:
    """Rate of delivering ``count`` pending events; checks that all of them arrived."""
    fake.reset()
    config = client_config(
        fake.url, folder / f"drain-{time.monotonic_ns()}.sqlite3", max_queue_size=count
    )
    client = TelemetryClient(config)
    for event in example_events(count):
        client.track(event)
    assert client.queue_size == count, client.stats()
    started = time.perf_counter()
    client.start()
    result = client.flush(timeout=300)
    elapsed = time.perf_counter() - started
    client.stop()
    delivered = fake.count()
    return {"rate": count / elapsed, "delivered": float(delivered), "remaining": result.remaining}


def end_to_end_ours(folder: pathlib.Path, sink: Sink, events: list[Any]) -> dict[str, float]:
    sink.reset()
    config = client_config(
        sink.url, folder / f"e2e-{time.monotonic_ns()}.sqlite3", max_queue_size=len(events)
    )
    client = TelemetryClient(config)
    client.start()
    started = time.perf_counter()
    for event in events:
        client.track(event)
    client.flush(timeout=300)
    elapsed = time.perf_counter() - started
    client.stop()
    return {"rate": len(events) / elapsed, "delivered": float(sink.count())}


def end_to_end_posthog(sink: Sink, dicts: list[dict[str, Any]]) -> dict[str, float]:
    import posthog

    sink.reset()
    client = posthog.Client("phc_benchmark", host=sink.url, max_queue_size=len(dicts) + 1)
    started = time.perf_counter()
    for item in dicts:
        client.capture("task_completed", distinct_id=INSTANCE_ID, properties=item)
    client.flush(timeout_seconds=300)
    elapsed = time.perf_counter() - started
    client.shutdown()
    return {"rate": len(dicts) / elapsed, "delivered": float(sink.count())}


def end_to_end_segment(sink: Sink, dicts: list[dict[str, Any]]) -> dict[str, float]:
    from segment.analytics import Client

    sink.reset()
    client = Client(API_KEY, host=sink.url, max_queue_size=len(dicts) + 1)
    started = time.perf_counter()
    for item in dicts:
        client.track(user_id=INSTANCE_ID, event="task_completed", properties=item)
    client.flush()
    elapsed = time.perf_counter() - started
    client.shutdown()
    return {"rate": len(dicts) / elapsed, "delivered": float(sink.count())}


def run(
    *, folder: pathlib.Path, fake: Sink, peer_sink: Sink, count: int, rounds: int
) -> tuple[dict[str, list[dict[str, float]]], dict[str, str]]:
    """Every throughput figure, ``rounds`` times, contenders back to back."""
    results: dict[str, list[dict[str, float]]] = {"drain": [], "e2e_ours": []}
    skipped: dict[str, str] = {}
    peers = {
        "e2e_posthog": ("posthog", end_to_end_posthog),
        "e2e_segment": ("segment-analytics-python", end_to_end_segment),
    }
    for key, (distribution, _) in peers.items():
        if peer_available(distribution):
            results[key] = []
        else:
            skipped[distribution] = "skipped (not installed)"
    for _ in range(rounds):
        results["drain"].append(drain(folder, fake, count))
        events = example_events(count)
        dicts = [event_to_dict(e) for e in events]
        results["e2e_ours"].append(end_to_end_ours(folder, peer_sink, events))
        for key, (_, measure) in peers.items():
            if key in results:
                results[key].append(measure(peer_sink, dicts))
    return results, skipped
