"""A FastAPI service that reports each finished agent task (run: uvicorn fastapi_app:app)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from mosaic_telemetry import (
    Complexity,
    EventBuilder,
    EventValidationError,
    Harness,
    Outcome,
    Provider,
    TaskType,
    TelemetryClient,
    TelemetryConfig,
)

config = TelemetryConfig()  # MOSAIC_TELEMETRY_* environment variables
telemetry = TelemetryClient(config)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await telemetry.start_async()  # starts the worker thread; the loop is never blocked
    yield
    await telemetry.stop_async()  # bounded by shutdown_timeout_seconds


app = FastAPI(lifespan=lifespan)


class TaskReport(BaseModel):
    task_type: str
    model: str
    provider: str
    complexity: str
    outcome: str
    duration_ms: int
    input_tokens: int
    output_tokens: int
    cost_usd_micros: int
    gates_passed: bool


@app.post("/tasks/complete")
async def complete_task(report: TaskReport) -> dict[str, str]:
    try:
        event = (
            EventBuilder(instance_id=config.instance_id or "")
            .task_type(TaskType(report.task_type))
            .model(report.model)
            .provider(Provider(report.provider))
            .harness_type(Harness.API_DIRECT)
            .complexity_level(Complexity(report.complexity))
            .outcome_value(Outcome(report.outcome))
            .duration_ms(report.duration_ms)
            .tokens(
                estimated_in=0,
                estimated_out=0,
                actual_in=report.input_tokens,
                actual_out=report.output_tokens,
            )
            .cost(estimated=0, actual=report.cost_usd_micros)
            .quality(passed=report.gates_passed, gates_run=[])
            .context(compactions=0, rotations=0, utilization=0.0)
            .build()
        )
    except (EventValidationError, ValueError) as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    telemetry.track(event)  # synchronous, fast (one local SQLite insert), never raises
    return {"status": "tracked", "event_id": str(event.event_id)}


@app.get("/telemetry/stats")
async def telemetry_stats() -> dict[str, object]:
    return telemetry.stats()
