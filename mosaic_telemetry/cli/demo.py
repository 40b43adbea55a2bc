"""``mosaic-telemetry demo``: track into a temp outbox, deliver to a loopback test server."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from . import options
from .format import EXIT_OK, EXIT_PROBLEM

__all__ = ["register", "run"]


def register(commands: options.Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``demo`` to the command line (it takes none of the common options)."""
    demo = options.add_command(
        commands,
        "demo",
        run,
        "track events into a temp outbox and deliver them to a loopback server",
    )
    demo.add_argument("--events", type=int, default=5, help="how many events (default 5)")


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Track a few events into a real outbox and deliver them to a loopback test server."""
    import tempfile
    import uuid

    from .._client import TelemetryClient
    from .._config import TelemetryConfig
    from .._enums import Outcome
    from ..testing import FakeTelemetryServer, example_event_builder

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
                example_event_builder(instance_id)
                .outcome_value(Outcome.SUCCESS if n % 4 else Outcome.PARTIAL)
                .duration_ms(45_000 + 1_000 * n)
                .tokens(actual_in=112_340 + n)
                .cost(actual=919_200 + n)
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
        delivered_all = result.remaining == 0 and len(server.events) == args.events
        return EXIT_OK if delivered_all else EXIT_PROBLEM
