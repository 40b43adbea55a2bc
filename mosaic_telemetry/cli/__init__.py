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
    serve                          the test server in the foreground (wire-v1, in memory)

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
import os
import sys
from collections.abc import Sequence
from typing import Any, Final, Protocol, TextIO, cast

from . import demo, doctor, flush, outbox, predict, send, serve, status, track
from .format import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_PROBLEM,
    EXIT_USAGE,
    PROG,
    error,
    one_line,
    sdk_logs,
)
from .options import Subparsers, common
from .redact import RedactingStream, Redactor, secrets_from_env

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
    serve,
)


class _Version(argparse.Action):
    """``--version``: the distribution's version, read from its metadata only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from .._version import get_version

        sys.stdout.write(f"{PROG} {get_version()}\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect, repair and drain the mosaic_telemetry outbox; run the demo.",
        epilog="Exit codes: 0 ok, 1 a problem found or an operation failed, 2 usage error.",
    )
    parser.add_argument("--version", action=_Version, help="show the version and exit")
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
    """Run the command line; returns the exit code.

    Everything printed, on ``out`` (default stdout) and on stderr, passes through a
    :class:`~.redact.Redactor` of the API key. A reader that closes the pipe early
    (``... | head``) ends the command quietly with 141, as ``SIGPIPE`` ends other tools.
    """
    redactor = Redactor(secrets_from_env(os.environ))
    stdout = RedactingStream(out if out is not None else sys.stdout, redactor)
    stderr = RedactingStream(sys.stderr, redactor)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                return _run(argv, cast(TextIO, stdout), redactor)
            finally:
                stdout.flush()
                stderr.flush()
    except BrokenPipeError:
        if out is None:
            _stdout_to_devnull()
        return EXIT_BROKEN_PIPE


def _stdout_to_devnull() -> None:
    # What Python holds in sys.stdout's buffer is flushed again at exit, into the closed pipe,
    # and would print "Exception ignored ... BrokenPipeError". The Python docs' advice (see
    # the signal module's note on SIGPIPE): point stdout at devnull. Reproduce with
    # `mosaic-telemetry outbox list --limit 0 | head -1` over a few thousand events.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _run(argv: Sequence[str] | None, out: TextIO, redactor: Redactor) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return _usage_code(exc)
    redactor.add(getattr(args, "api_key", None))  # a command that takes a key as an option
    debug = bool(getattr(args, "debug", False))
    with sdk_logs(debug) as logs:
        args.logs = logs
        try:
            code: int = args.handler(args, out)
        except SystemExit as exc:  # args.parser.error() in a handler: a usage error
            return _usage_code(exc)
        except BrokenPipeError:
            raise
        except KeyboardInterrupt:
            _report("interrupted", debug=debug)
            return EXIT_INTERRUPTED
        except Exception as exc:
            _report(one_line(str(exc)) or type(exc).__name__, debug=debug)
            return EXIT_PROBLEM
    return code


def _report(message: str, *, debug: bool) -> None:
    """The error as one line, or with ``--debug`` as its traceback (both redacted)."""
    if debug:
        import traceback

        traceback.print_exc()
    else:
        error(message)
