"""``mosaic-telemetry track``: an event from the shell, written to the outbox; nothing is sent.

The event comes as flags (``--task-type implementation --model ... --actual-in N``) or as JSON
on stdin: one object, or one object per line (JSON lines) for several, keyed like the wire
(event schema 1.0). Every record is read by the SDK's own rules before anything is written: a
bad or missing field anywhere is exit 2 with every problem named, and no file is touched.
Then a client that is never started writes the events to the outbox (on disk when the command
returns) and the command prints each ``event_id``. A running client, ``flush`` or ``send``
delivers them later.

What a shell cannot know is filled in as ``client.task(...)`` does (docs/agents.md): the
estimates from the cached prediction's medians, else 0 ("no estimate"); context 0, 0, 0.0;
no gates; ``event_id``, ``timestamp`` (now) and ``instance_id`` (from the configuration).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO

from . import options
from .format import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, PROG, error, one_line, print_json

if TYPE_CHECKING:
    from enum import Enum

    from .._client import TelemetryClient
    from .._models import TaskCompletionEvent

__all__ = ["REQUIRED", "register", "run"]

#: The facts a shell must give; every other field has a default.
REQUIRED: Final = (
    "task_type",
    "model",
    "provider",
    "harness",
    "complexity",
    "outcome",
    "task_duration_ms",
    "actual_input_tokens",
    "actual_output_tokens",
    "actual_cost_usd_micros",
    "quality_gate_passed",
)
#: flag -> (event field, how its text is read).
FLAGS: Final[dict[str, tuple[str, str]]] = {
    "--task-type": ("task_type", "text"),
    "--model": ("model", "text"),
    "--provider": ("provider", "text"),
    "--harness": ("harness", "text"),
    "--complexity": ("complexity", "text"),
    "--outcome": ("outcome", "text"),
    "--duration-ms": ("task_duration_ms", "int"),
    "--actual-in": ("actual_input_tokens", "int"),
    "--actual-out": ("actual_output_tokens", "int"),
    "--actual-cost": ("actual_cost_usd_micros", "int"),
    "--passed": ("quality_gate_passed", "bool"),
    "--gates-run": ("quality_gates_run", "list"),
    "--gates-failed": ("quality_gates_failed", "list"),
    "--estimated-in": ("estimated_input_tokens", "int"),
    "--estimated-out": ("estimated_output_tokens", "int"),
    "--estimated-cost": ("estimated_cost_usd_micros", "int"),
    "--compactions": ("context_compactions", "int"),
    "--rotations": ("context_rotations", "int"),
    "--utilization": ("context_utilization_final", "float"),
    "--retry-count": ("retry_count", "int"),
    "--language": ("language", "text"),
    "--repo-size": ("repo_size_category", "text"),
    "--event-id": ("event_id", "text"),
    "--timestamp": ("timestamp", "text"),
}
_METAVARS: Final = {"int": "N", "float": "X", "bool": "true|false", "list": "A,B", "text": "TEXT"}
_BOOLS: Final = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def register(commands: options.Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``track`` to the command line."""
    from .._enums import (  # loaded with the package already: costs nothing here
        Complexity,
        Harness,
        Outcome,
        Provider,
        QualityGate,
        RepoSizeCategory,
        TaskType,
    )

    track = options.add_command(
        commands,
        "track",
        run,
        "write an event (flags, or JSON on stdin) to the outbox",
        parents=[common],
        epilog=(
            "Required: " + ", ".join(REQUIRED) + ". Bad input: exit 2, every problem named, "
            "nothing written. Prints the event_id of each event tracked."
        ),
    )
    kinds: dict[str, type[Enum]] = {
        "task_type": TaskType,
        "provider": Provider,
        "harness": Harness,
        "complexity": Complexity,
        "outcome": Outcome,
        "repo_size_category": RepoSizeCategory,
        "quality_gates_run": QualityGate,
        "quality_gates_failed": QualityGate,
    }
    for flag, (field, kind) in FLAGS.items():
        values = kinds.get(field)
        text = field if values is None else f"{field}: {', '.join(str(v.value) for v in values)}"
        # Read as text and converted in run(), so one run names every bad value at once
        # (an argparse type= would stop at the first).
        track.add_argument(flag, dest=field, metavar=_METAVARS[kind], help=text)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Read and check every record; then write them all to the outbox, or nothing (exit 2)."""
    given = {field: getattr(args, field) for field, _kind in FLAGS.values()}
    given = {field: text for field, text in given.items() if text is not None}
    problems: list[str] = []
    unreadable: set[str] = set()  # flags whose text is no value: named once, not twice
    if given:
        records = [_from_flags(given, problems, unreadable)]
    elif sys.stdin is None or sys.stdin.isatty():
        error(f"no event: give it as flags (see `{PROG} track --help`) or as JSON on stdin")
        return EXIT_USAGE
    else:
        records = _from_json(sys.stdin.read(), problems)
    config = options.config(args)
    events = _build(records, config.instance_id, problems, unreadable)
    if problems:
        for problem in problems:
            error(problem)
        error(f"nothing written ({len(problems)} problem(s))", level="note")
        return EXIT_USAGE
    if not config.enabled:
        error("telemetry is disabled (MOSAIC_TELEMETRY_ENABLED): nothing tracked", level="note")
        return EXIT_OK
    return _write(events, records, config, args, out)


def _from_flags(given: dict[str, str], problems: list[str], unreadable: set[str]) -> dict[str, Any]:
    flag_of = {field: flag for flag, (field, _kind) in FLAGS.items()}
    kinds = dict(FLAGS.values())
    record: dict[str, Any] = {}
    for field, text in given.items():
        kind = kinds[field]
        try:
            if kind == "int":
                record[field] = int(text)
            elif kind == "float":
                record[field] = float(text)
            elif kind == "bool":
                record[field] = _BOOLS[text.strip().lower()]
            elif kind == "list":
                record[field] = [item.strip() for item in text.split(",") if item.strip()]
            else:
                record[field] = text
        except (ValueError, KeyError):
            wanted = {"int": "a whole number", "float": "a number", "bool": "true or false"}
            problems.append(f"{field} ({flag_of[field]}): must be {wanted[kind]}, got {text!r}")
            unreadable.add(field)
    return record


def _from_json(text: str, problems: list[str]) -> list[dict[str, Any]]:
    """One JSON object, or one per line; a problem per unreadable line."""
    if not text.strip():
        problems.append("stdin: empty; give one JSON object, or one per line (JSON lines)")
        return []
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None  # several lines, or bad JSON: read line by line
    else:
        if isinstance(whole, dict):
            return [whole]
        if isinstance(whole, list):
            problems.append("stdin: a JSON array; give one object, or one object per line")
            return []
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            problems.append(f"line {number}: not JSON ({exc})")
            continue
        if not isinstance(record, dict):
            problems.append(f"line {number}: must be a JSON object, got {type(record).__name__}")
            continue
        records.append(record)
    return records


def _build(
    records: list[dict[str, Any]], instance_id: Any, problems: list[str], unreadable: set[str]
) -> list[TaskCompletionEvent]:
    """Each record with the defaults, read by the wire reader's rules (the builder's own)."""
    import uuid
    from datetime import datetime, timezone

    from .._exceptions import EventValidationError
    from .._task_rules import CONTEXT_DEFAULTS, ESTIMATE_FIELDS
    from .._wire.events import event_from_dict

    defaults: dict[str, Any] = {
        **dict.fromkeys(ESTIMATE_FIELDS, 0),
        **CONTEXT_DEFAULTS,
        "quality_gates_run": [],
        "quality_gates_failed": [],
        "retry_count": 0,
        "language": None,
        "repo_size_category": None,
    }
    if instance_id:
        defaults["instance_id"] = instance_id
    events = []
    for number, record in enumerate(records, start=1):
        where = f"line {number}: " if len(records) > 1 else ""
        values = {
            **defaults,
            "event_id": str(uuid.uuid4()),
            "timestamp": datetime.now(timezone.utc),
            **record,
        }
        try:
            events.append(event_from_dict(values))
        except EventValidationError as exc:
            for problem in exc.problems:
                if problem.split(":", 1)[0] in unreadable:
                    continue
                hint = ""
                if problem.startswith("instance_id:") and "instance_id" not in record:
                    hint = " (set MOSAIC_TELEMETRY_INSTANCE_ID)"
                problems.append(f"{where}{problem}{hint}")
    return events


def _write(
    events: list[TaskCompletionEvent],
    records: list[dict[str, Any]],
    config: Any,
    args: argparse.Namespace,
    out: TextIO,
) -> int:
    """Track every event with a client that is never started, then check they are on disk."""
    from .._client import TelemetryClient

    client = TelemetryClient(config)
    try:
        for event, record in zip(events, records, strict=True):
            client.track(_with_medians(client, event, record))
    finally:
        client.stop()  # never started: writes whatever was handed off, sends nothing
    stats = client.stats()
    unsaved = stats["held_in_memory"] + stats["lost"] + stats["invalid"]
    if not stats["durable"] or unsaved:
        reason = one_line(str(stats["last_error"] or "the outbox could not be written"))
        count = len(events) if not stats["durable"] else unsaved
        error(f"{count} event(s) not written to {stats['outbox_path'] or 'the outbox'}: {reason}")
        return EXIT_PROBLEM
    ids = [str(event.event_id) for event in events]
    if args.json:
        print_json(out, {"outbox": stats["outbox_path"], "tracked": ids})
    else:
        out.write("".join(f"{event_id}\n" for event_id in ids))
    return EXIT_OK


def _with_medians(
    client: TelemetryClient, event: TaskCompletionEvent, record: dict[str, Any]
) -> TaskCompletionEvent:
    """Estimates the record did not give, from the client's cached prediction (as a task)."""
    import attrs

    from .._models import PredictionQuery
    from .._task_rules import medians

    query = PredictionQuery(
        task_type=event.task_type,
        model=event.model,
        provider=event.provider,
        complexity=event.complexity,
    )
    found: dict[str, Any] = {
        k: v for k, v in medians(client.get_prediction(query)).items() if k not in record
    }
    return attrs.evolve(event, **found) if found else event
