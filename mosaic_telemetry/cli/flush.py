"""``mosaic-telemetry flush``: drain the outbox now with the configured server."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any, Final, TextIO

from . import options
from .format import EXIT_OK, EXIT_PROBLEM, PROG, error, one_line, print_json, when

__all__ = ["register", "run"]

_PROGRESS_WIDTH: Final = 30
#: How often the progress is redrawn while the flush runs.
_PROGRESS_SECONDS: Final = 0.1


def register(commands: options.Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``flush`` to the command line."""
    flush = options.add_command(commands, "flush", run, "drain the outbox now", parents=[common])
    flush.add_argument(
        "--timeout", type=options.positive_seconds, default=30.0, metavar="S", help="seconds (30)"
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Drain the outbox now with the configured server; exit 1 unless all was delivered."""
    from .._client import TelemetryClient
    from .._exceptions import OutboxError, TelemetryError
    from .._store import OutboxReader

    config = options.usable_config(args, purpose="sending")
    problems = config.validate()
    if problems:
        raise TelemetryError("configuration problems: " + "; ".join(problems))
    path = config.resolved_outbox_path()
    if not path.exists():
        raise OutboxError(f"no outbox file at {path}: nothing to flush")
    status = OutboxReader(path).status()  # refuses a corrupt or foreign file before we open it
    if status.server_url and status.server_url != config.server_url:
        raise OutboxError(
            f"outbox {path} belongs to {status.server_url}, not the configured "
            f"{config.server_url}; its events are not sent elsewhere"
        )
    client = TelemetryClient(config)
    stats = client.stats()
    if not stats["durable"] or stats["config_problems"]:
        client.stop()
        reason = "; ".join(stats["config_problems"]) or stats["last_error"] or "unusable"
        raise OutboxError(f"cannot use outbox {path}: {reason}")
    total = client.queue_size
    if not args.json:
        out.write(f"flushing {total} pending event(s) from {path} to {config.server_url}\n")
    result: list[Any] = []
    try:
        client.start()
        sender = threading.Thread(
            target=lambda: result.append(client.flush(args.timeout)),
            name="mosaic-telemetry-flush",
            daemon=True,
        )
        sender.start()
        progress = _Progress(out, total, enabled=not args.json)
        while True:
            sender.join(_PROGRESS_SECONDS)
            now = client.stats()
            progress.show(now["delivered"] + now["duplicates"] + now["dead_lettered"])
            if not sender.is_alive():
                break
        progress.end()
    finally:
        client.stop()
    final = client.stats()
    timed_out = bool(result and result[0].timed_out) or not result
    summary = {
        "path": str(path),
        "server_url": config.server_url,
        "delivered": final["delivered"],
        "duplicates": final["duplicates"],
        "remaining": final["pending"],
        "dead_lettered": final["dead_lettered"],
        "timed_out": timed_out,
    }
    if args.json:
        print_json(out, summary)
    else:
        already = f" ({final['duplicates']} already on the server)" if final["duplicates"] else ""
        out.write(
            f"delivered {final['delivered'] + final['duplicates']}{already}, "
            f"remaining {final['pending']}, dead {final['dead_lettered']}\n"
        )
    return _verdict(path, final, timed_out)


def _verdict(path: Path, final: dict[str, Any], timed_out: bool) -> int:
    from .._store import OutboxReader

    if final["pending"]:
        reason = final["last_error"] or ("timed out" if timed_out else "not sent")
        not_before = OutboxReader(path).status().not_before
        if not_before is not None:
            reason += f"; the server asked to wait until {when(not_before)}"
        error(f"{final['pending']} event(s) still pending: {one_line(reason)}")
        return EXIT_PROBLEM
    if final["dead_lettered"]:
        error(
            f"{final['dead_lettered']} event(s) rejected by the server: see "
            f"`{PROG} outbox list --dead`"
        )
        return EXIT_PROBLEM
    return EXIT_OK


class _Progress:
    """``[#####.....] 5/10`` redrawn in place on a TTY; a plain line per change otherwise."""

    def __init__(self, out: TextIO, total: int, *, enabled: bool) -> None:
        self._out = out
        self._total = total
        self._enabled = enabled and total > 0
        self._tty = bool(getattr(out, "isatty", lambda: False)())
        self._shown = -1

    def show(self, done: int) -> None:
        done = min(done, self._total)
        if not self._enabled or done == self._shown or (done == 0 and not self._tty):
            return
        self._shown = done
        if self._tty:
            filled = _PROGRESS_WIDTH * done // self._total
            bar = "#" * filled + "." * (_PROGRESS_WIDTH - filled)
            self._out.write(f"\r[{bar}] {done}/{self._total}")
        else:
            self._out.write(f"sent {done}/{self._total}\n")
        self._out.flush()

    def end(self) -> None:
        if self._enabled and self._tty and self._shown >= 0:
            self._out.write("\n")
