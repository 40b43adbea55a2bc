"""``mosaic-telemetry serve``: the test server (``FakeTelemetryServer``) in the foreground.

It prints ``listening on URL`` once it accepts connections, then one line per request: when
(UTC), what arrived, what it answered (``202 accepted 98, duplicate 1, rejected 1``). The
stored events are listed as JSON at ``GET URL/_fake/events``, a test aid that is never part
of the real API. SIGINT (Ctrl-C) or SIGTERM stops it cleanly with exit status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from . import options
from .format import EXIT_OK, EXIT_PROBLEM, error

if TYPE_CHECKING:
    from ..testing import FakeTelemetryServer, RecordedRequest

__all__ = ["register", "run"]

_KEY = re.compile(r"\A[0-9a-fA-F]{64}\Z")


def _api_key(text: str) -> str:
    if not _KEY.match(text):
        raise argparse.ArgumentTypeError("must be 64 hex characters (the key is not shown)")
    return text


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def _port(text: str) -> int:
    value = options.non_negative(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port 0..65535, got {value}")
    return value


def register(commands: options.Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``serve`` to the command line (it takes none of the common options)."""
    serve = options.add_command(
        commands,
        "serve",
        run,
        "the test server in the foreground (wire-v1, in memory)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=_port, default=0, help="TCP port (default 0: a free one)")
    serve.add_argument(
        "--api-key",
        type=_api_key,
        metavar="KEY",
        help="accept only this key (default: any well-formed Bearer key)",
    )
    serve.add_argument(
        "--latency", type=_seconds, default=0.0, metavar="S", help="hold every reply S seconds"
    )
    serve.add_argument(
        "--fail-rate",
        type=_share,
        default=0.0,
        metavar="P",
        help="answer this share (0..1) of event batches 503, storing nothing",
    )
    serve.add_argument(
        "--retry-after",
        type=options.non_negative,
        metavar="S",
        help="send Retry-After: S with the --fail-rate 503s",
    )
    serve.add_argument("--seed", type=int, help="seed of the --fail-rate draws (repeatable runs)")
    serve.add_argument(
        "--predictions",
        metavar="FILE",
        help='answers to seed: a JSON list of {"query": {...}, "response": {...}} (wire-v1 §2)',
    )
    serve.add_argument(
        "--reject-invalid",
        choices=("per-event", "422"),
        default="per-event",
        help="invalid events: a per-event verdict (default) or a 422 for the whole batch",
    )


def _seed_predictions(server: FakeTelemetryServer, path: str) -> None:
    """Give ``server`` the answers listed in the JSON file at ``path``; ValueError names why not."""
    from pathlib import Path

    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"--predictions {path}: {exc}") from None
    if not isinstance(entries, list):
        raise ValueError(f"--predictions {path}: must hold a JSON list")
    for index, entry in enumerate(entries):
        query = entry.get("query") if isinstance(entry, dict) else None
        response = entry.get("response") if isinstance(entry, dict) else None
        if not isinstance(query, dict) or not isinstance(response, dict):
            raise ValueError(f"--predictions {path}: item {index} needs a query and a response")
        try:
            server.set_prediction(query, response)
        except ValueError as exc:
            raise ValueError(f"--predictions {path}: item {index}: {exc}") from None


class _Printer:
    """Writes whole lines to ``out`` from any thread; a closed stream is not an error."""

    def __init__(self, out: TextIO) -> None:
        self._out, self._lock = out, threading.Lock()

    def line(self, text: str) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._out.write(text + "\n")
            self._out.flush()

    def request(self, record: RecordedRequest) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.line(f"{stamp.replace('+00:00', 'Z')}  {describe(record)}")


_NOUNS = {"events": ("event", "events"), "queries": ("query", "queries")}


def describe(record: RecordedRequest) -> str:
    """``POST /v1/events/batch  100 events  202 accepted 99, duplicate 1``, for one request."""
    what = f"{record.method} {record.path}"
    payload = record.json if record.method == "POST" else None
    for key, (one, many) in _NOUNS.items():
        items = payload.get(key) if isinstance(payload, dict) else None
        if isinstance(items, list):
            what += f"  {len(items)} {one if len(items) == 1 else many}"
    if record.status == 0:
        return f"{what}  no reply (connection dropped or held)"
    return f"{what}  {record.status} {_outcome(record)}".rstrip()


def _outcome(record: RecordedRequest) -> str:
    try:
        reply: Any = json.loads(record.reply)
    except ValueError:
        return ""
    if not isinstance(reply, dict):
        return ""
    results = reply.get("results")
    if 200 <= record.status < 300 and isinstance(results, list) and "accepted" in reply:
        counts: dict[str, int] = {}
        for result in results:
            status = result.get("status") if isinstance(result, dict) else None
            counts[str(status)] = counts.get(str(status), 0) + 1
        return ", ".join(f"{status} {n}" for status, n in counts.items()) or "no verdicts"
    detail = reply.get("detail")
    return " ".join(str(detail).split())[:200] if isinstance(detail, str) else ""


class _Stopping(Exception):
    """Raised in the main thread by the first SIGINT or SIGTERM."""


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """The first SIGINT or SIGTERM raises _Stopping in the main thread; later ones are ignored.

    Raising (as Python does for Ctrl-C) rather than setting an Event: a handler that takes a
    lock the interrupted main thread holds would deadlock. Elsewhere than the main thread no
    handler can be installed, and the caller's own signal handling stays as it is.
    """
    import signal  # here: importing the command line loads the parser only

    previous: dict[int, Any] = {}
    stopping = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise _Stopping

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread
            break
    try:
        yield
    finally:
        for installed, old in previous.items():
            signal.signal(installed, old)


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop, 1 when it cannot start."""
    from ..testing import FakeTelemetryServer

    printer = _Printer(out)
    server = FakeTelemetryServer(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        reject_invalid=args.reject_invalid,
        latency=args.latency,
        fail_rate=args.fail_rate,
        seed=args.seed,
        retry_after=args.retry_after,
        read_endpoint=True,
        on_request=printer.request,
    )
    if args.predictions is not None:
        try:
            _seed_predictions(server, args.predictions)
        except ValueError as exc:
            error(str(exc))
            return EXIT_PROBLEM
    with _stopped_by_signals():
        try:
            try:
                server.start()
            except OSError as exc:
                error(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
                return EXIT_PROBLEM
            keys = "only the key given" if args.api_key else "any well-formed key"
            printer.line(f"listening on {server.url} ({keys}); stored events: GET /_fake/events")
            threading.Event().wait()  # until a signal raises _Stopping
        except _Stopping:
            pass
        finally:
            server.stop()
    stored, received = len(server.events), len(server.requests)
    printer.line(f"stopped (events stored: {stored}, requests: {received})")
    return EXIT_OK
