"""``mosaic-telemetry status``: what the outbox holds, read-only."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import options
from .format import EXIT_OK, EXIT_PROBLEM, duration, hint, one_line, print_json, size, table, when

if TYPE_CHECKING:
    from .._store import OutboxStatus

__all__ = ["register", "run", "status_lines"]


def register(commands: options.Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``status`` to the command line."""
    status = options.add_command(
        commands, "status", run, "what the outbox holds (read-only)", parents=[common]
    )
    status.add_argument(
        "--all",
        action="store_true",
        help="every outbox file in the default state directory, one line each",
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Counts, ages, sizes and identity of the outbox (``--all``: of every default outbox)."""
    if args.all:
        if args.outbox is not None:
            args.parser.error("--all lists the default state directory; give it or --outbox")
        return _run_all(args, out)
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
    spooled = f"{st.spooled}"
    if st.spools:
        files = ", ".join(f"{s.token} ({s.owner}) {s.events}" for s in st.spools)
        spooled += f" in {len(st.spools)} spool file(s): {files}"
    return [
        ("outbox", st.path),
        ("size", f"{size(st.size_bytes)}, {wal}"),
        ("schema", f"version {st.schema_version}, mode {st.mode}, created {when(st.created_at)}"),
        ("server", st.server_url or "-"),
        ("pending", pending),
        ("dead", f"{st.dead}"),
        ("spooled", spooled),
        ("not before", paused),
        ("last error", last_error),
        ("counters", counters),
        ("ledger", ledger_line(st.ledger)),
    ]


def ledger_line(ledger: dict[str, int]) -> str:
    """``tracked N = delivered a + ... + dry_run g``, and whether it balances."""
    outcomes = {k: v for k, v in ledger.items() if k != "tracked"}
    text = f"tracked {ledger.get('tracked', 0)} = " + " + ".join(
        f"{name} {value}" for name, value in outcomes.items()
    )
    missing = ledger.get("tracked", 0) - sum(outcomes.values())
    return text if not missing else f"{text}: DOES NOT BALANCE ({missing:+d} unaccounted)"


def _run_all(args: argparse.Namespace, out: TextIO) -> int:
    """One line per outbox file in the default state directory; exit 1 if one is unreadable."""
    from .._config import default_outbox_dir

    directory = default_outbox_dir()
    files = sorted(directory.glob("*.sqlite3")) if directory.is_dir() else []
    entries = [_entry(path) for path in files if path.is_file()]
    if args.json:
        print_json(out, entries)
    elif entries:
        rows = [
            [
                e["path"],
                "-" if e["pending"] is None else str(e["pending"]),
                "-" if e["dead"] is None else str(e["dead"]),
                size(e["size_bytes"] + (e["wal_bytes"] or 0)),
                f"unreadable: {one_line(e['error'])}" if e["error"] else _server(e),
            ]
            for e in entries
        ]
        table(out, ["PATH", "PENDING", "DEAD", "SIZE", "SERVER"], rows)
    if not entries:
        hint(f"no outbox files in {directory}")
    if directory.is_dir():
        aside = sorted(
            p.name
            for p in directory.glob("*.sqlite3.corrupt-*")
            if not p.name.endswith(("-wal", "-shm"))
        )
        if aside:
            hint(f"{len(aside)} corrupt file(s) moved aside there, not listed: {', '.join(aside)}")
    return EXIT_PROBLEM if any(e["error"] for e in entries) else EXIT_OK


def _entry(path: Path) -> dict[str, Any]:
    """What ``status --all`` shows of one file; an unreadable one says why."""
    from .._exceptions import OutboxError
    from .._store import OutboxReader

    try:
        st = OutboxReader(path).status()
    except OutboxError as exc:
        return {
            "path": str(path),
            "pending": None,
            "dead": None,
            "size_bytes": path.stat().st_size,
            "wal_bytes": None,
            "server_url": None,
            "mode": None,
            "error": str(exc),
        }
    return {
        "path": str(path),
        "pending": st.pending,
        "dead": st.dead,
        "size_bytes": st.size_bytes,
        "wal_bytes": st.wal_bytes,
        "server_url": st.server_url,
        "mode": st.mode,
        "error": None,
    }


def _server(entry: dict[str, Any]) -> str:
    server = entry["server_url"] or "-"
    return f"{server} (dry run)" if entry["mode"] == "dry_run" else server
