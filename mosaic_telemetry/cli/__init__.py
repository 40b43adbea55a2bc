"""The ``mosaic-telemetry`` command line (also ``python -m mosaic_telemetry``).

Thin over the library, stdlib ``argparse`` only::

    status                         what the outbox holds (read-only)
    outbox list|show|export        its rows (read-only)
    outbox requeue|purge           repair: dead letters back to pending, or delete
    flush                          drain now with the configured server
    predict                        ask the server for a prediction
    doctor                         check config, outbox file, disk and server
    demo                           track into a temp outbox, deliver to a loopback server
    track                          write an event from flags or JSON on stdin (sends nothing)
    send [--follow]                deliver the outbox once, or until SIGTERM/SIGINT

Each command group is one module with ``register(commands, common)``, listed in
:data:`COMMANDS`; adding a command is one import and one entry there. Importing this package
loads ``argparse`` and the parser only: a command imports what it needs when it runs, so
``--help`` and ``status`` never load ``requests``, ``cattrs`` or ``tenacity``.

Inspection opens the file read-only and never starts a worker or touches the network. Output
goes to ``out``; errors are one line on stderr (``--debug`` shows the traceback). Exit codes:
0 ok, 1 a problem found or an operation failed, 2 usage error. The API key is never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import Final, Protocol, TextIO

from . import demo, doctor, flush, outbox, predict, send, status, track
from .format import EXIT_PROBLEM, EXIT_USAGE, PROG, error, one_line, sdk_logs
from .options import Subparsers, common

__all__ = ["COMMANDS", "build_parser", "main"]


class _CommandModule(Protocol):
    def register(self, commands: Subparsers, common: argparse.ArgumentParser) -> None: ...


#: The command modules, in the order ``--help`` lists them.
COMMANDS: Final[tuple[_CommandModule, ...]] = (
    status,
    outbox,
    flush,
    predict,
    doctor,
    demo,
    track,
    send,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect, repair and drain the mosaic_telemetry outbox; run the demo.",
        epilog="Exit codes: 0 ok, 1 a problem found or an operation failed, 2 usage error.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    parent = common()
    for module in COMMANDS:
        module.register(commands, parent)
    return parser


def _usage_code(exc: SystemExit) -> int:
    return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out or sys.stdout):  # --help is output like any other
            args = parser.parse_args(argv)
    except SystemExit as exc:
        return _usage_code(exc)
    debug = bool(getattr(args, "debug", False))
    with sdk_logs(debug) as logs:
        args.logs = logs
        try:
            code: int = args.handler(args, out or sys.stdout)
        except SystemExit as exc:  # args.parser.error() in a handler: a usage error
            return _usage_code(exc)
        except KeyboardInterrupt:
            if debug:
                raise
            error("interrupted")
            return 130
        except Exception as exc:
            if debug:
                raise
            error(one_line(str(exc)) or type(exc).__name__)
            return EXIT_PROBLEM
    return code
