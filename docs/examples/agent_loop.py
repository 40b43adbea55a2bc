"""A long-lived agent loop: one client for the process, one event per finished task."""

from __future__ import annotations

import time

from mosaic_telemetry import (
    Complexity,
    EventBuilder,
    Harness,
    Outcome,
    PredictionQuery,
    Provider,
    QualityGate,
    TaskType,
    TelemetryClient,
    TelemetryConfig,
)

config = TelemetryConfig(submit_interval_seconds=60)  # env vars for the rest
tasks = [TaskType.DEBUGGING, TaskType.IMPLEMENTATION]  # what your agent works on

with TelemetryClient(config) as client:  # stop() at the end sends what is left
    queries = [
        PredictionQuery(
            task_type=kind,
            model="claude-sonnet-4-5-20250929",
            provider=Provider.ANTHROPIC,
            complexity=Complexity.MEDIUM,
        )
        for kind in tasks
    ]
    client.refresh_predictions_sync(queries)  # once; refresh every few hours in a real agent
    for kind, query in zip(tasks, queries, strict=True):
        started = time.monotonic()
        # ... run the task with your model here ...
        event = (
            EventBuilder(instance_id=config.instance_id or "")
            .task_type(kind)
            .model(query.model)
            .provider(query.provider)
            .harness_type(Harness.CUSTOM)
            .complexity_level(query.complexity)
            .outcome_value(Outcome.SUCCESS)
            .duration_ms(int((time.monotonic() - started) * 1000))
            .tokens(estimated_in=20_000, estimated_out=5_000, actual_in=21_500, actual_out=4_200)
            .cost(estimated=120_000, actual=127_000)
            .quality(passed=True, gates_run=[QualityGate.TEST])
            .context(compactions=0, rotations=0, utilization=0.3)
            .build()
        )
        client.track(event)
    print(client.stats()["pending"], "events waiting for the next cycle or for stop()")
