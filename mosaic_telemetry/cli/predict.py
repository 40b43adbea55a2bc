"""``mosaic-telemetry predict``: ask the server for the prediction of one combination."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Final, TextIO

from .._enums import Complexity, Provider, TaskType
from . import options
from .format import EXIT_OK, error, one_line, print_json, table

if TYPE_CHECKING:
    from .._models import PredictionResponse

__all__ = ["register", "run"]

_PERCENTILES: Final = ("p10", "p25", "median", "p75", "p90")


def register(commands: options.Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``predict`` to the command line."""
    predict = options.add_command(
        commands, "predict", run, "ask the server for a prediction", parents=[common]
    )
    predict.add_argument("--task-type", required=True, choices=[e.value for e in TaskType])
    predict.add_argument("--model", required=True)
    predict.add_argument("--provider", required=True, choices=[e.value for e in Provider])
    predict.add_argument("--complexity", required=True, choices=[e.value for e in Complexity])


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Ask the server for the prediction of one combination and print it.

    Whether the server answered is decided by what ``refresh_predictions_sync`` returns (how
    many answers it cached); the SDK's own log lines only supply the reason shown.
    """
    from .._client import TelemetryClient
    from .._exceptions import TelemetryError
    from .._models import PredictionQuery
    from .._store import OutboxReader
    from .._wire.predictions import prediction_to_dict, query_to_dict

    config = options.usable_config(args, purpose="prediction requests")
    problems = [p for p in config.validate() if p.startswith("server_url:")]
    if problems:
        raise TelemetryError("; ".join(problems))
    query = PredictionQuery(
        task_type=args.task_type,
        model=args.model,
        provider=args.provider,
        complexity=args.complexity,
    )
    path = config.resolved_outbox_path()  # the prediction cache lives in the outbox
    if path.exists():
        OutboxReader(path).status()  # a corrupt or foreign file is refused, never moved aside
    client = TelemetryClient(config)
    logged_before = len(args.logs.messages)
    fresh = client.refresh_predictions_sync([query])
    answer = client.get_prediction(query)
    logged = args.logs.messages[logged_before:]
    reason = one_line(logged[-1]) if logged else "the server gave no readable answer"
    if answer is None:
        raise TelemetryError(f"no prediction: {reason}")
    if not fresh:
        error(f"{reason}; showing the cached answer", level="warning")
    if args.json:
        print_json(out, {"query": query_to_dict(query), **prediction_to_dict(answer)})
        return EXIT_OK
    values = query_to_dict(query)
    out.write(" / ".join(values[k] for k in ("task_type", "model", "provider", "complexity")))
    out.write("\n")
    _print_answer(out, answer)
    return EXIT_OK


def _print_answer(out: TextIO, answer: PredictionResponse) -> None:
    meta = answer.metadata
    if answer.prediction is None:
        note = f"; {meta.fallback_note}" if meta.fallback_note else ""
        out.write(f"no prediction for this combination yet ({meta.sample_size} samples{note})\n")
        return
    data = answer.prediction
    cost = {k: f"{v / 1e6:.2f}" for k, v in data.cost_usd_micros.items()}
    duration = {k: f"{v / 1000:.1f}" for k, v in data.duration_ms.items()}
    extra = sorted((set(cost) | set(duration)) - set(_PERCENTILES))
    columns = [*_PERCENTILES, *extra]
    rows = [
        ["input tokens", *(str(getattr(data.input_tokens, c, "")) for c in columns)],
        ["output tokens", *(str(getattr(data.output_tokens, c, "")) for c in columns)],
        ["cost (USD)", *(cost.get(c, "") for c in columns)],
        ["duration (s)", *(duration.get(c, "") for c in columns)],
    ]
    table(out, ["", *columns], rows)
    out.write(
        f"quality: gates pass {data.quality.gate_pass_rate:.0%}, "
        f"success {data.quality.success_rate:.0%}\n"
    )
    if data.correction_factors:
        factors = ", ".join(f"{k} {v:.2f}" for k, v in sorted(data.correction_factors.items()))
        out.write(f"correction factors: {factors}\n")
    confidence = getattr(meta.confidence, "value", meta.confidence)
    updated = meta.last_updated.strftime("%Y-%m-%dT%H:%M:%SZ") if meta.last_updated else "-"
    out.write(
        f"{meta.sample_size} samples, confidence {confidence}, "
        f"fallback level {meta.fallback_level}, updated {updated}\n"
    )
