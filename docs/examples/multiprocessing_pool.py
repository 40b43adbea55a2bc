"""One client shared with multiprocessing workers: each process tracks into the same outbox."""

from __future__ import annotations

import multiprocessing

from mosaic_telemetry import (
    Complexity,
    EventBuilder,
    Harness,
    Outcome,
    Provider,
    TaskType,
    TelemetryClient,
    TelemetryConfig,
)

config = TelemetryConfig()
client = TelemetryClient(config)  # created before the pool: children inherit it


def run_task(n: int) -> str:
    event = (
        EventBuilder(instance_id=config.instance_id or "")
        .task_type(TaskType.TESTING)
        .model("gpt-5")
        .provider(Provider.OPENAI)
        .harness_type(Harness.AIDER)
        .complexity_level(Complexity.LOW)
        .outcome_value(Outcome.SUCCESS)
        .duration_ms(1_000 + n)
        .tokens(estimated_in=1_000, estimated_out=200, actual_in=1_100, actual_out=180)
        .cost(estimated=3_000, actual=3_300)
        .quality(passed=True, gates_run=[])
        .context(compactions=0, rotations=0, utilization=0.1)
        .build()
    )
    client.track(event)  # a forked child reopens the outbox by itself; a spawned one builds it anew
    return str(event.event_id)


if __name__ == "__main__":
    client.start()
    for method in ("fork", "spawn"):
        with multiprocessing.get_context(method).Pool(2) as pool:
            ids = pool.map(run_task, range(4))
        print(method, len(ids), "events tracked in child processes")
    result = client.flush(timeout=30)  # the parent's worker sends what the children tracked
    client.stop()
    print("delivered", result.delivered, "remaining", result.remaining)
