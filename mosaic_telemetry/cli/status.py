"""``mosaic-telemetry status``: what the outbox holds, read-only."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, TextIO

from . import options
from .format import EXIT_OK, duration, one_line, print_json, size, when

if TYPE_CHECKING:
    from .._store import OutboxStatus

__all__ = ["register", "run", "status_lines"]


def register(commands: options.Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``status`` to the command line."""
    options.add_command(
        commands, "status", run, "what the outbox holds (read-only)", parents=[common]
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Counts, ages, sizes and identity of the outbox."""
    status = options.open_reader(args).status()
    if args.json:
        print_json(out, status.to_dict())
        return EXIT_OK
    for label, value in status_lines(status, now=time.time()):
        out.write(f"{label:<12}{value}\n")
    return EXIT_OK


def status_lines(st: OutboxStatus, *, now: float) -> list[tuple[str, str]]:
    """``(label, text)`` for each line of the text output."""
    oldest = st.oldest_pending_age_seconds
    pending = f"{st.pending}"
    if oldest is not None:
        pending += f" (oldest tracked {duration(oldest)} ago)"
    pending += f", {st.leased} being sent (leased)"
    wal = "no WAL file" if st.wal_bytes is None else f"WAL {size(st.wal_bytes)}"
    paused = "-"
    if st.not_before is not None:
        paused = f"{when(st.not_before)} (sending paused {duration(st.not_before - now)} more)"
    last_error = "-"
    if st.last_error is not None:
        last_error = f"{when(st.last_error_at)} {one_line(st.last_error)}"
    counters = ", ".join(f"{name} {value}" for name, value in st.counters.items())
    return [
        ("outbox", st.path),
        ("size", f"{size(st.size_bytes)}, {wal}"),
        ("schema", f"version {st.schema_version}, mode {st.mode}, created {when(st.created_at)}"),
        ("server", st.server_url or "-"),
        ("pending", pending),
        ("dead", f"{st.dead}"),
        ("not before", paused),
        ("last error", last_error),
        ("counters", counters),
    ]
