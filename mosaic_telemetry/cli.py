"""The ``mosaic-telemetry`` command line (also ``python -m mosaic_telemetry``).

Thin over the library, stdlib ``argparse`` only. Exit codes: 0 ok, 1 a problem found or an
operation failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

__all__ = ["main"]

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    """Track a few events into a real outbox and deliver them to a loopback test server."""
    from . import (
        Complexity,
        EventBuilder,
        Harness,
        Outcome,
        Provider,
        QualityGate,
        TaskType,
        TelemetryClient,
        TelemetryConfig,
    )
    from .testing import FakeTelemetryServer

    api_key = uuid.uuid4().hex + uuid.uuid4().hex
    instance_id = str(uuid.uuid4())
    with (
        tempfile.TemporaryDirectory(prefix="mosaic-telemetry-demo-") as tmp,
        FakeTelemetryServer(api_key=api_key) as server,
    ):
        outbox = Path(tmp) / "outbox.sqlite3"
        out.write(f"test server listening on {server.url}\n")
        out.write(f"outbox file: {outbox}\n")
        config = TelemetryConfig(
            server_url=server.url,
            api_key=api_key,
            instance_id=instance_id,
            outbox_path=outbox,
            submit_interval_seconds=3600,
        )
        client = TelemetryClient(config)
        for n in range(args.events):
            event = (
                EventBuilder(instance_id=instance_id)
                .task_type(TaskType.IMPLEMENTATION)
                .model("claude-sonnet-4-5-20250929")
                .provider(Provider.ANTHROPIC)
                .harness_type(Harness.CLAUDE_CODE)
                .complexity_level(Complexity.MEDIUM)
                .outcome_value(Outcome.SUCCESS if n % 4 else Outcome.PARTIAL)
                .duration_ms(45_000 + 1_000 * n)
                .tokens(
                    estimated_in=105_000,
                    estimated_out=45_000,
                    actual_in=112_340 + n,
                    actual_out=38_760,
                )
                .cost(estimated=630_000, actual=919_200 + n)
                .quality(
                    passed=True, gates_run=[QualityGate.BUILD, QualityGate.LINT, QualityGate.TEST]
                )
                .context(compactions=2, rotations=0, utilization=0.72)
                .language("typescript")
                .build()
            )
            client.track(event)
        out.write(f"tracked {args.events} events; pending in the outbox: {client.queue_size}\n")
        with client:
            result = client.flush(timeout=30)
        out.write(
            f"flushed: delivered {result.delivered}, remaining {result.remaining}; "
            f"the server stored {len(server.events)} events in {len(server.requests)} request(s)\n"
        )
        return (
            EXIT_OK if result.remaining == 0 and len(server.events) == args.events else EXIT_PROBLEM
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="mosaic-telemetry",
        description="Inspect and drain the mosaic_telemetry outbox; run the demo.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    demo = commands.add_parser(
        "demo", help="track events into a temp outbox and deliver them to a loopback test server"
    )
    demo.add_argument("--events", type=int, default=5, help="how many events (default 5)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code: int = args.handler(args, out or sys.stdout)
    except Exception as exc:
        if args.debug:
            raise
        print(f"mosaic-telemetry: error: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    return code
