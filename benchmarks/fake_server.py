"""How many events per second ``FakeTelemetryServer`` stores: one keep-alive client, 100 a batch.

    python benchmarks/fake_server.py                  # 200 batches x 3 rounds
    python benchmarks/fake_server.py --batches 50 --rounds 1

The server must never bound a figure of ours (issue 15: at least 3x the SDK's drain rate). It
runs in this process; the client runs in a child process, so the two never share a GIL, as
the SDK's worker and the server never do in the drain benchmark. The child builds every body
first (100 events with fresh ids, the SDK's own wire JSON of the example event), then posts
them back to back on one ``requests.Session`` and times the loop; each reply comes after the
batch was stored, so batches x 100 / seconds is the storing rate. The server's count of
stored events is checked against what was sent.

``measure(batches, rounds)`` returns ``{"rate": median events/s, "rates": [...], "cpu_rate":
events per CPU second of the server, ...}`` for ``benchmarks/run.py``. On a loaded machine the
wall rate swings with the neighbours; the CPU rate is what the server costs, and steadier.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from typing import Any

from common import API_KEY, INSTANCE_ID, run_child

BATCH = 100


def _bodies(batches: int) -> list[bytes]:
    from mosaic_telemetry._wire.events import event_to_dict
    from mosaic_telemetry.testing import example_event_builder

    template = event_to_dict(example_event_builder(INSTANCE_ID).build())
    bodies = []
    for _ in range(batches):
        events = [{**template, "event_id": str(uuid.uuid4())} for _ in range(BATCH)]
        bodies.append(json.dumps({"events": events}).encode())
    return bodies


def client(url: str, batches: int) -> dict[str, Any]:
    """Post ``batches`` pre-built bodies (plus one warm-up) on one session; time the loop."""
    import requests

    warmup, *bodies = _bodies(batches + 1)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    with requests.Session() as session:
        endpoint = url + "/v1/events/batch"
        session.post(endpoint, data=warmup, headers=headers, timeout=30).raise_for_status()
        started, cpu = time.perf_counter(), time.process_time()
        for body in bodies:
            reply = session.post(endpoint, data=body, headers=headers, timeout=30)
            if reply.status_code != 202 or reply.json()["accepted"] != BATCH:
                raise RuntimeError(f"batch not stored: {reply.status_code} {reply.text[:200]}")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"events": batches * BATCH, "seconds": seconds, "client_cpu_seconds": cpu}


def measure(batches: int = 200, rounds: int = 3) -> dict[str, Any]:
    """The fake server's storing rate over ``rounds`` rounds of ``batches`` batches of 100."""
    from mosaic_telemetry.testing import FakeTelemetryServer

    rates, cpu_rates, client_rates = [], [], []
    for _ in range(rounds):
        with FakeTelemetryServer(api_key=API_KEY) as server:
            cpu = time.process_time()  # this process only serves while the child posts
            found = run_child([__file__, "--client", server.url, str(batches)], timeout=600)
            cpu = time.process_time() - cpu
            if not server.wait_for_events((batches + 1) * BATCH, timeout=0):
                raise RuntimeError(f"the server stored fewer than {(batches + 1) * BATCH} events")
        rates.append(found["events"] / found["seconds"])
        cpu_rates.append((batches + 1) * BATCH / cpu)
        client_rates.append(found["events"] / found["client_cpu_seconds"])
    return {
        "rate": statistics.median(rates),
        "rates": [round(rate) for rate in rates],
        "cpu_rate": statistics.median(cpu_rates),
        "cpu_rates": [round(rate) for rate in cpu_rates],
        "client_cpu_rate": statistics.median(client_rates),
        "batch": BATCH,
        "batches": batches,
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--client", nargs=2, metavar=("URL", "BATCHES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        print(json.dumps(client(args.client[0], int(args.client[1]))))
        return
    found = measure(args.batches, args.rounds)
    print(
        f"FakeTelemetryServer stores {found['rate']:,.0f} events/s (rounds: {found['rates']});"
        f" {found['cpu_rate']:,.0f} events per CPU second of the server"
    )
    print(json.dumps(found))


if __name__ == "__main__":
    main(sys.argv[1:])
