"""``mosaic-telemetry send``: deliver the outbox with the normal worker, once or until stopped.

For hosts where only short-lived processes track (shell hooks, git hooks, CI steps, see
``track``): ``send`` drains the outbox once and exits; ``send --follow`` keeps a started
``TelemetryClient`` running, whose worker looks for new events every ``--interval`` seconds,
until SIGTERM or SIGINT, then stops it within ``shutdown_timeout_seconds`` and exits 0. It is
the same worker every client runs: leases (several senders and clients may share one file),
the shared ``Retry-After`` pause, backoff, dead letters. The SDK's log, one line per batch,
goes to stderr at INFO.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final, TextIO

from . import options
from .format import EXIT_OK, EXIT_PROBLEM, error, one_line, print_json, when

if TYPE_CHECKING:
    import signal

    from .._client import TelemetryClient

__all__ = ["register", "run"]

#: The signals that end ``send --follow`` (systemd and container runtimes send SIGTERM).
STOP_SIGNALS: Final = ("SIGTERM", "SIGINT")


def register(commands: options.Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``send`` to the command line."""
    send = options.add_command(
        commands,
        "send",
        run,
        "deliver the outbox: one drain, or --follow until SIGTERM/SIGINT",
        parents=[common],
    )
    send.add_argument(
        "--follow", action="store_true", help="keep sending until SIGTERM or SIGINT (exit 0)"
    )
    send.add_argument(
        "--interval",
        type=options.positive_seconds,
        default=5.0,
        metavar="S",
        help="with --follow: look for new events every S seconds (5)",
    )
    send.add_argument(
        "--shutdown-timeout",
        type=options.positive_seconds,
        metavar="S",
        help="with --follow: after SIGTERM/SIGINT, stop within S seconds (default: the "
        "configured shutdown_timeout_seconds, 5)",
    )
    send.add_argument(
        "--timeout",
        type=options.positive_seconds,
        default=60.0,
        metavar="S",
        help="without --follow: give up the drain after S seconds (60)",
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    """One drain (exit 1 if events remain), or ``--follow`` until a stop signal (exit 0)."""
    from .._client import TelemetryClient
    from .._exceptions import OutboxError, TelemetryError

    config = options.usable_config(args, purpose="sending")
    problems = config.validate()
    if problems:
        raise TelemetryError("configuration problems: " + "; ".join(problems))
    config.submit_interval_seconds = args.interval  # how often the worker looks for events
    if args.shutdown_timeout is not None:
        config.shutdown_timeout_seconds = args.shutdown_timeout
    path = config.resolved_outbox_path()
    if not args.follow and not path.exists():
        error(f"no outbox file at {path}: nothing to send", level="note")
        return EXIT_OK
    with _info_on_stderr(enabled=not getattr(args, "debug", False)):
        client = TelemetryClient(config)
        stats = client.stats()
        if not stats["durable"] or stats["config_problems"]:
            client.stop()
            reason = "; ".join(stats["config_problems"]) or stats["last_error"] or "unusable"
            raise OutboxError(f"cannot use outbox {path}: {reason}")
        if args.follow:
            return _follow(client, args.interval, float(config.shutdown_timeout_seconds))
        return _drain_once(client, args, out)


def _drain_once(client: TelemetryClient, args: argparse.Namespace, out: TextIO) -> int:
    try:
        client.start()
        result = client.flush(timeout=args.timeout)
    finally:
        client.stop()
    final = client.stats()
    summary = {
        "delivered": final["delivered"],
        "duplicates": final["duplicates"],
        "dead_lettered": final["dead_lettered"],
        "remaining": final["pending"],
        "timed_out": result.timed_out,
    }
    if args.json:
        print_json(out, summary)
    else:
        out.write(
            f"delivered {final['delivered'] + final['duplicates']}, "
            f"remaining {final['pending']}, dead {final['dead_lettered']}\n"
        )
    if final["pending"]:
        reason = str(final["last_error"] or ("timed out" if result.timed_out else "not sent"))
        not_before = _shared_pause(final["outbox_path"])
        if not_before is not None:
            reason += f"; the server asked to wait until {when(not_before)}"
        error(f"{final['pending']} event(s) still pending: {one_line(reason)}")
        return EXIT_PROBLEM
    return EXIT_OK


def _shared_pause(path: str | None) -> float | None:
    """The Retry-After pause stored in the outbox for every process, if one is running."""
    import time

    from .._store import OutboxReader

    if path is None:
        return None
    not_before = OutboxReader(path).status().not_before
    return not_before if not_before is not None and not_before > time.time() else None


def _follow(client: TelemetryClient, interval: float, bound: float) -> int:
    """Run the worker until a stop signal; stop it (within ``bound`` seconds) and exit 0."""
    import signal

    from .._log import logger

    with _stop_signals() as wait:
        try:
            logger.info(
                "sending %s every %g s until SIGTERM or SIGINT",
                client.stats()["outbox_path"],
                interval,
            )
            client.start()
            signum = wait()
            logger.info("%s: stopping (within %g s)", signal.Signals(signum).name, bound)
        finally:
            client.stop()
    logger.info("stopped; %d event(s) stay in the outbox", client.queue_size)
    return EXIT_OK


@contextmanager
def _stop_signals() -> Iterator[Callable[[], int]]:
    """Yield a function that blocks until SIGTERM or SIGINT and returns which one came.

    The signals are blocked in this thread before the worker starts (threads inherit the
    mask), so exactly this thread takes them with ``sigwait``: no handler runs in the middle
    of a lock. Signals that arrive while the client stops are consumed, not left pending to
    kill the process when the mask is restored.
    """
    import signal

    stops = {signal.Signals[name] for name in STOP_SIGNALS}
    if not hasattr(signal, "pthread_sigmask"):  # Windows: handlers and an event
        yield _wait_with_handlers(stops)
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        yield lambda: signal.sigwait(stops)
    finally:
        while stops & signal.sigpending():
            signal.sigtimedwait(stops, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _wait_with_handlers(stops: set[signal.Signals]) -> Callable[[], int]:
    import signal
    import threading

    stop = threading.Event()
    got: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        got.append(signum)
        stop.set()

    for signum in stops:
        signal.signal(signum, handler)

    def wait() -> int:
        while not stop.wait(1.0):
            pass
        return got[0]

    return wait


@contextmanager
def _info_on_stderr(*, enabled: bool) -> Iterator[None]:
    """The ``mosaic_telemetry`` logger at INFO on stderr for one command (``--debug``: DEBUG)."""
    import logging

    from .._log import logger

    if not enabled:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    if level == logging.NOTSET or level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
