"""The ``mosaic-telemetry`` command line (also ``python -m mosaic_telemetry``).

Thin over the library, stdlib ``argparse`` only::

    status                         what the outbox holds (read-only)
    outbox list|show|export        its rows (read-only)
    outbox requeue|purge           repair: dead letters back to pending, or delete
    flush                          drain now with the configured server
    predict                        ask the server for a prediction
    doctor                         check config, outbox file, disk and server
    demo                           track into a temp outbox, deliver to a loopback server

Inspection opens the file read-only (:class:`._store.OutboxReader`) and never starts a
worker or touches the network. Output goes to ``out``; errors are one line on stderr
(``--debug`` shows the traceback). Exit codes: 0 ok, 1 a problem found or an operation failed,
2 usage error. The API key is never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from ._config import TelemetryConfig
from ._enums import Complexity, Provider, TaskType
from ._exceptions import OutboxError, TelemetryError
from ._log import logger
from ._store import OutboxReader, OutboxStatus

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
PROG = "mosaic-telemetry"
#: ``doctor`` warns when the outbox's file system has less free space than this.
LOW_DISK_BYTES = 100 * 1024 * 1024
#: ``doctor`` waits at most this long for the server.
DOCTOR_TIMEOUT_SECONDS = 5.0
_PERCENTILES = ("p10", "p25", "median", "p75", "p90")
_PROGRESS_WIDTH = 30


class _LogCapture(logging.Handler):
    """Keeps the SDK's warnings and errors of one command (shown in our own error lines)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _sdk_logs(debug: bool) -> Iterator[_LogCapture]:
    """Capture the ``mosaic_telemetry`` logger for one command; with ``--debug`` also print it."""
    capture = _LogCapture()
    handlers: list[logging.Handler] = [capture]
    if debug:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
        handlers.append(stream)
    level = logger.level
    for handler in handlers:
        logger.addHandler(handler)
    if debug:
        logger.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.setLevel(level)


# --- formatting -----------------------------------------------------------------------------
def _json(out: TextIO, value: object) -> None:
    out.write(json.dumps(value, indent=2, default=str) + "\n")


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        out.write("  ".join(cells).rstrip() + "\n")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- paths and opening ----------------------------------------------------------------------
def _config(args: argparse.Namespace) -> TelemetryConfig:
    """The configuration from MOSAIC_TELEMETRY_* with ``--outbox`` as the outbox path."""
    return TelemetryConfig(outbox_path=args.outbox)


def _outbox_path(args: argparse.Namespace) -> Path:
    if args.outbox is not None:
        return Path(args.outbox).expanduser()
    return _config(args).resolved_outbox_path()


def _reader(args: argparse.Namespace) -> OutboxReader:
    """A reader of the chosen outbox; a missing file is an error naming where we looked."""
    path = _outbox_path(args)
    if not path.exists():
        hint = "" if args.outbox is not None else " (from MOSAIC_TELEMETRY_*; pick one: --outbox)"
        raise OutboxError(f"no outbox file at {path}{hint}")
    return OutboxReader(path)


def _repair(reader: OutboxReader, action: Callable[[Any], int]) -> int:
    """Open the (validated, existing) file read-write with SqliteOutbox and run ``action``."""
    from ._store import SqliteOutbox

    meta = reader.meta()  # refuses a missing, corrupt or foreign file before we open it
    outbox = SqliteOutbox(
        reader.path,
        server_url=meta.get("server_url", ""),
        dry_run=meta.get("mode") == "dry_run",
    )
    try:
        return action(outbox)
    finally:
        outbox.close()


# --- status and outbox ------------------------------------------------------------------------
def _status(args: argparse.Namespace, out: TextIO) -> int:
    """Counts, ages, sizes and identity of the outbox."""
    status = _reader(args).status()
    if args.json:
        _json(out, status.to_dict())
        return EXIT_OK
    for label, value in _status_lines(status):
        out.write(f"{label:<12}{value}\n")
    return EXIT_OK


def _status_lines(st: OutboxStatus) -> list[tuple[str, str]]:
    now = time.time()
    oldest = st.oldest_pending_age_seconds
    pending = f"{st.pending}"
    if oldest is not None:
        pending += f" (oldest tracked {_duration(oldest)} ago)"
    pending += f", {st.leased} being sent (leased)"
    wal = "no WAL file" if st.wal_bytes is None else f"WAL {_size(st.wal_bytes)}"
    paused = "-"
    if st.not_before is not None:
        paused = f"{_when(st.not_before)} (sending paused {_duration(st.not_before - now)} more)"
    error = "-"
    if st.last_error is not None:
        error = f"{_when(st.last_error_at)} {_one_line(st.last_error)}"
    counters = ", ".join(f"{name} {value}" for name, value in st.counters.items())
    return [
        ("outbox", st.path),
        ("size", f"{_size(st.size_bytes)}, {wal}"),
        ("schema", f"version {st.schema_version}, mode {st.mode}, created {_when(st.created_at)}"),
        ("server", st.server_url or "-"),
        ("pending", pending),
        ("dead", f"{st.dead}"),
        ("not before", paused),
        ("last error", error),
        ("counters", counters),
    ]


def _row_json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "body"}


def _list(args: argparse.Namespace, out: TextIO) -> int:
    """Pending (or dead) rows, oldest first."""
    reader = _reader(args)
    limit = None if args.limit == 0 else args.limit
    rows = reader.list_rows(dead=args.dead, limit=limit)
    if args.json:
        _json(out, [_row_json(r) for r in rows])
        return EXIT_OK
    now = time.time()
    if args.dead:
        header = ["ID", "EVENT_ID", "DEAD SINCE", "ATTEMPTS", "HTTP", "REASON"]
        lines = [
            [
                str(r["id"]),
                r["event_id"],
                _when(r["dead_at"]),
                str(r["attempts"]),
                str(r["http_status"] or "-"),
                _one_line(str(r["reason"])),
            ]
            for r in rows
        ]
    else:
        header = ["ID", "EVENT_ID", "STATE", "AGE", "ATTEMPTS", "NOTE"]
        lines = [
            [
                str(r["id"]),
                r["event_id"],
                r["state"],
                _duration(now - float(r["enqueued_at"])),
                str(r["attempts"]),
                _row_note(r, now),
            ]
            for r in rows
        ]
    if not rows:
        out.write(f"no {'dead' if args.dead else 'pending'} events in {reader.path}\n")
        return EXIT_OK
    _table(out, header, lines)
    total = reader.count(dead=args.dead)
    if total > len(rows):
        out.write(f"(showing {len(rows)} of {total}; --limit 0 shows all)\n")
    return EXIT_OK


def _row_note(row: dict[str, Any], now: float) -> str:
    if row["state"] == "leased":
        return (
            f"leased by pid {row['lease_pid']} on {row['lease_host']} "
            f"until {_when(row['lease_expires_at'])}"
        )
    next_at = float(row["next_attempt_at"] or 0)
    return f"next attempt in {_duration(next_at - now)}" if next_at > now else ""


def _show(args: argparse.Namespace, out: TextIO) -> int:
    """One event by id, with its stored JSON."""
    reader = _reader(args)
    row = reader.get_row(args.event_id)
    if row is None:
        raise OutboxError(f"no event {args.event_id} in {reader.path} (neither pending nor dead)")
    try:
        event: Any = json.loads(row["body"])
    except ValueError:
        event = row["body"]
    if args.json:
        _json(out, {**_row_json(row), "event": event})
        return EXIT_OK
    for key, value in _row_json(row).items():
        if value is not None:
            shown = (_when(value) if value else "-") if key.endswith("_at") else value
            out.write(f"{key:<17}{shown}\n")
    out.write("\n")
    _json(out, event)
    return EXIT_OK


def _export(args: argparse.Namespace, out: TextIO) -> int:
    """Every pending (or dead) event as JSON lines: the stored events themselves."""
    for row in _reader(args).list_rows(dead=args.dead):
        try:
            line = json.dumps(json.loads(row["body"]), separators=(",", ":"))
        except ValueError:
            line = json.dumps(row["body"])  # not JSON (never written by the SDK): a string
        out.write(line + "\n")
    return EXIT_OK


def _requeue(args: argparse.Namespace, out: TextIO) -> int:
    """Dead letters back to pending, attempts reset, so the next drain sends them."""
    if bool(args.event_ids) == bool(args.all):
        args.parser.error("give EVENT_ID ... or --all (one of them)")
    reader = _reader(args)
    wanted: list[str] | None = None if args.all else list(dict.fromkeys(args.event_ids))
    if wanted is not None:
        unknown = [e for e in wanted if e not in reader.dead_event_ids(wanted)]
        if unknown:
            raise OutboxError(
                f"not in the dead-letter table of {reader.path}: {', '.join(unknown)} "
                "(nothing was requeued)"
            )
    moved = _repair(reader, lambda outbox: int(outbox.requeue(wanted)))
    if args.json:
        _json(out, {"path": str(reader.path), "requeued": moved})
    else:
        out.write(f"requeued {moved} dead event(s) in {reader.path}; the next drain sends them\n")
    return EXIT_OK


def _purge(args: argparse.Namespace, out: TextIO) -> int:
    """Delete dead letters (``--dead``) or everything (``--all``) for good."""
    reader = _reader(args)
    what = "dead" if args.dead else "dead and pending"
    if not args.yes:
        count = reader.count(dead=True) + (0 if args.dead else reader.count(dead=False))
        args.parser.error(
            f"this deletes {count} {what} event(s) from {reader.path} for good; "
            "add --yes to confirm"
        )
    removed = _repair(reader, lambda outbox: int(outbox.purge(dead_only=args.dead)))
    if args.json:
        _json(out, {"path": str(reader.path), "purged": removed})
    else:
        out.write(f"purged {removed} {what} event(s) from {reader.path}\n")
    return EXIT_OK


# --- flush -------------------------------------------------------------------------------------
def _usable_config(args: argparse.Namespace, *, purpose: str) -> TelemetryConfig:
    config = _config(args)
    if not config.enabled:
        raise TelemetryError(f"telemetry is disabled (MOSAIC_TELEMETRY_ENABLED): no {purpose}")
    if config.dry_run:
        raise TelemetryError(f"dry run is on (MOSAIC_TELEMETRY_DRY_RUN): no {purpose}")
    return config


def _flush(args: argparse.Namespace, out: TextIO) -> int:
    """Drain the outbox now with the configured server; exit 1 unless all was delivered."""
    from ._client import TelemetryClient

    config = _usable_config(args, purpose="sending")
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
            sender.join(0.1)
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
        _json(out, summary)
    else:
        already = f" ({final['duplicates']} already on the server)" if final["duplicates"] else ""
        out.write(
            f"delivered {final['delivered'] + final['duplicates']}{already}, "
            f"remaining {final['pending']}, dead {final['dead_lettered']}\n"
        )
    return _flush_verdict(path, final, timed_out)


def _flush_verdict(path: Path, final: dict[str, Any], timed_out: bool) -> int:
    if final["pending"]:
        reason = final["last_error"] or ("timed out" if timed_out else "not sent")
        not_before = OutboxReader(path).status().not_before
        if not_before is not None:
            reason += f"; the server asked to wait until {_when(not_before)}"
        _error(f"{final['pending']} event(s) still pending: {_one_line(reason)}")
        return EXIT_PROBLEM
    if final["dead_lettered"]:
        _error(
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


# --- predict --------------------------------------------------------------------------------------
def _predict(args: argparse.Namespace, out: TextIO) -> int:
    """Ask the server for the prediction of one combination and print it."""
    from ._client import TelemetryClient
    from ._models import PredictionQuery
    from ._wire.predictions import prediction_to_dict, query_to_dict

    config = _usable_config(args, purpose="prediction requests")
    problems = [p for p in config.validate() if p.startswith("server_url:")]
    if problems:
        raise TelemetryError("; ".join(problems))
    query = PredictionQuery(
        task_type=args.task_type,
        model=args.model,
        provider=args.provider,
        complexity=args.complexity,
    )
    path = config.resolved_outbox_path()  # the prediction cache lives in the outbox
    if path.exists():
        OutboxReader(path).status()  # a corrupt or foreign file is refused, never moved aside
    failures_before = len(args.logs.messages)
    client = TelemetryClient(config)
    client.refresh_predictions_sync([query])
    answer = client.get_prediction(query)
    failures = [m for m in args.logs.messages[failures_before:] if "prediction" in m]
    if answer is None:
        reason = failures[-1] if failures else "the server gave no readable answer"
        raise TelemetryError(f"no prediction: {_one_line(reason)}")
    if failures:
        _error(f"{_one_line(failures[-1])}; showing the cached answer", level="warning")
    if args.json:
        _json(out, {"query": query_to_dict(query), **prediction_to_dict(answer)})
        return EXIT_OK
    values = query_to_dict(query)
    out.write(" / ".join(values[k] for k in ("task_type", "model", "provider", "complexity")))
    out.write("\n")
    meta = answer.metadata
    if answer.prediction is None:
        note = f"; {meta.fallback_note}" if meta.fallback_note else ""
        out.write(f"no prediction for this combination yet ({meta.sample_size} samples{note})\n")
        return EXIT_OK
    data = answer.prediction
    cost = {k: f"{v / 1e6:.2f}" for k, v in data.cost_usd_micros.items()}
    duration = {k: f"{v / 1000:.1f}" for k, v in data.duration_ms.items()}
    extra = sorted((set(cost) | set(duration)) - set(_PERCENTILES))
    columns = [*_PERCENTILES, *extra]
    rows = [
        ["input tokens", *(str(getattr(data.input_tokens, c, "")) for c in columns)],
        ["output tokens", *(str(getattr(data.output_tokens, c, "")) for c in columns)],
        ["cost (USD)", *(cost.get(c, "") for c in columns)],
        ["duration (s)", *(duration.get(c, "") for c in columns)],
    ]
    _table(out, ["", *columns], rows)
    out.write(
        f"quality: gates pass {data.quality.gate_pass_rate:.0%}, "
        f"success {data.quality.success_rate:.0%}\n"
    )
    if data.correction_factors:
        factors = ", ".join(f"{k} {v:.2f}" for k, v in sorted(data.correction_factors.items()))
        out.write(f"correction factors: {factors}\n")
    confidence = getattr(meta.confidence, "value", meta.confidence)
    updated = meta.last_updated.strftime("%Y-%m-%dT%H:%M:%SZ") if meta.last_updated else "-"
    out.write(
        f"{meta.sample_size} samples, confidence {confidence}, "
        f"fallback level {meta.fallback_level}, updated {updated}\n"
    )
    return EXIT_OK


# --- doctor -------------------------------------------------------------------------------------
Check = tuple[str, str, str]  # (status: ok|warn|fail, name, detail)


def _doctor(args: argparse.Namespace, out: TextIO) -> int:
    """Check config, outbox file, permissions, disk and server; one line per check."""
    config = _config(args)
    path = _outbox_path(args)
    checks = [
        _check_config(config),
        *_check_outbox(path, config),
        _check_permissions(path),
        _check_disk(path),
        _check_server(config),
    ]
    if args.json:
        _json(out, [{"check": n, "status": s, "detail": d} for s, n, d in checks])
    else:
        for status, name, detail in checks:
            out.write(f"{status:<4} {name}" + (f": {detail}" if detail else "") + "\n")
    return EXIT_PROBLEM if any(s == "fail" for s, _, _ in checks) else EXIT_OK


def _check_config(config: TelemetryConfig) -> Check:
    problems = config.validate()  # texts name fields and lengths, never the key itself
    if problems:
        return "fail", "config", "; ".join(problems)
    if not config.enabled:
        return "warn", "config", "telemetry is disabled (MOSAIC_TELEMETRY_ENABLED)"
    if config.dry_run:
        return "warn", "config", "dry run is on: nothing is sent (MOSAIC_TELEMETRY_DRY_RUN)"
    key = "API key set" if config.api_key else "no API key"
    return "ok", "config", f"server {config.server_url}, instance {config.instance_id}, {key}"


def _check_outbox(path: Path, config: TelemetryConfig) -> list[Check]:
    if not path.exists():
        return [("warn", "outbox", f"no file yet at {path} (the first client creates it)")]
    reader = OutboxReader(path)
    try:
        problems = reader.quick_check()
        status = reader.status()
    except OutboxError as exc:
        return [("fail", "outbox", str(exc))]
    if problems != ["ok"]:
        return [("fail", "outbox", f"{path} fails quick_check: {'; '.join(problems)}")]
    checks: list[Check] = []
    mode = "dry_run" if config.dry_run else "real"
    if status.mode != mode:
        checks.append(("fail", "outbox", f"{path} is a {status.mode!r} outbox, config is {mode!r}"))
    elif status.server_url and config.server_url and status.server_url != config.server_url:
        checks.append(
            (
                "fail",
                "outbox",
                f"{path} belongs to {status.server_url}, config says {config.server_url}",
            )
        )
    else:
        checks.append(
            (
                "ok",
                "outbox",
                f"{path} (quick_check ok, schema {status.schema_version}, "
                f"{status.pending} pending, {status.dead} dead)",
            )
        )
    if status.dead:
        checks.append(
            ("warn", "dead letters", f"{status.dead} event(s): `{PROG} outbox list --dead`")
        )
    return checks


def _existing_dir(path: Path) -> Path:
    directory = path.absolute().parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    return directory


def _check_permissions(path: Path) -> Check:
    name = "outbox permissions"
    directory = path.absolute().parent
    if not path.exists():
        base = _existing_dir(path)
        if not os.access(base, os.W_OK | os.X_OK):
            return "fail", name, f"{base} is not writable: no outbox can be created"
        return "ok", name, f"{base} is writable"
    if not os.access(path, os.R_OK | os.W_OK) or not os.access(directory, os.W_OK | os.X_OK):
        return "fail", name, f"{path} or its directory is not writable by this user"
    if os.name == "nt":
        return "ok", name, "writable"
    file_mode = path.stat().st_mode & 0o777
    dir_mode = directory.stat().st_mode & 0o777
    loose = []
    if file_mode & 0o077:
        loose.append(f"file mode {file_mode:04o}, expected 0600")
    if dir_mode & 0o077:
        loose.append(f"directory mode {dir_mode:04o}, expected 0700")
    if loose:
        return "warn", name, "; ".join(loose) + " (other users can read the events)"
    return "ok", name, f"file {file_mode:04o}, directory {dir_mode:04o}"


def _check_disk(path: Path) -> Check:
    free = shutil.disk_usage(_existing_dir(path)).free
    mib = free / (1024 * 1024)
    if free < LOW_DISK_BYTES:
        return "warn", "disk", f"only {mib:.0f} MiB free next to the outbox"
    return "ok", "disk", f"{mib / 1024:.1f} GiB free"


def _check_server(config: TelemetryConfig) -> Check:
    from ._delivery.api import TelemetryApi
    from ._delivery.transport import RequestsTransport
    from ._models import PredictionQuery

    if any(p.startswith("server_url:") for p in config.validate()):
        return "fail", "server", "no usable server_url"
    url = str(config.server_url)
    timeout = DOCTOR_TIMEOUT_SECONDS
    if isinstance(config.request_timeout_seconds, (int, float)):
        timeout = max(0.1, min(timeout, float(config.request_timeout_seconds)))
    # The public endpoint: no key sent.
    transport = TelemetryApi(url, "", transport=RequestsTransport(), timeout=timeout)
    query = PredictionQuery(
        task_type=TaskType.IMPLEMENTATION,
        model="claude-sonnet-4-5-20250929",
        provider=Provider.ANTHROPIC,
        complexity=Complexity.MEDIUM,
    )
    started = time.monotonic()
    try:
        transport.post_predictions([query], timeout=timeout)
    except TelemetryError as exc:
        return "fail", "server", _one_line(str(exc))
    finally:
        transport.close()
    return "ok", "server", f"{url} answered in {(time.monotonic() - started) * 1000:.0f} ms"


# --- demo ---------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace, out: TextIO) -> int:
    """Track a few events into a real outbox and deliver them to a loopback test server."""
    from ._client import TelemetryClient
    from ._enums import Outcome
    from .testing import FakeTelemetryServer, example_event_builder

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
        return (
            EXIT_OK if result.remaining == 0 and len(server.events) == args.events else EXIT_PROBLEM
        )


# --- the parser ---------------------------------------------------------------------------------
def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _common() -> argparse.ArgumentParser:
    """Options every command but ``demo`` takes (given after the command)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--outbox",
        metavar="PATH",
        help="the outbox file (default: the one the MOSAIC_TELEMETRY_* settings resolve to)",
    )
    common.add_argument("--json", action="store_true", help="print JSON")
    # SUPPRESS: a default here would overwrite a --debug given before the command.
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="tracebacks"
    )
    return common


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
    common = _common()

    def command(name: str, handler: Callable[..., int], help: str, **kwargs: Any) -> Any:
        sub = commands.add_parser(name, help=help, description=help, **kwargs)
        sub.set_defaults(handler=handler, parser=sub)
        return sub

    command("status", _status, "what the outbox holds (read-only)", parents=[common])

    outbox = commands.add_parser(
        "outbox", help="list, show, export (read-only); requeue, purge (repair)"
    )
    actions = outbox.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    def action(name: str, handler: Callable[..., int], help: str) -> Any:
        sub = actions.add_parser(name, help=help, description=help, parents=[common])
        sub.set_defaults(handler=handler, parser=sub)
        return sub

    listing = action("list", _list, "pending (or dead) events, oldest first")
    listing.add_argument("--dead", action="store_true", help="the dead letters instead")
    listing.add_argument(
        "--limit", type=_non_negative, default=100, metavar="N", help="at most N (0: all)"
    )
    show = action("show", _show, "one event: its row and stored JSON")
    show.add_argument("event_id", metavar="EVENT_ID")
    export = action("export", _export, "events as JSON lines on stdout")
    export.add_argument("--dead", action="store_true", help="the dead letters instead")
    export.add_argument("--format", choices=["jsonl"], default="jsonl", help="jsonl (default)")
    requeue = action("requeue", _requeue, "move dead letters back to pending")
    requeue.add_argument("event_ids", nargs="*", metavar="EVENT_ID")
    requeue.add_argument("--all", action="store_true", help="every dead letter")
    purge = action("purge", _purge, "delete dead letters (--dead) or every event (--all)")
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("--dead", action="store_true", help="the dead letters")
    which.add_argument("--all", action="store_true", help="dead and pending events")
    purge.add_argument("--yes", action="store_true", help="really delete")

    flush = command("flush", _flush, "drain the outbox now", parents=[common])
    flush.add_argument(
        "--timeout", type=_positive_seconds, default=30.0, metavar="S", help="seconds (30)"
    )
    predict = command("predict", _predict, "ask the server for a prediction", parents=[common])
    predict.add_argument("--task-type", required=True, choices=[e.value for e in TaskType])
    predict.add_argument("--model", required=True)
    predict.add_argument("--provider", required=True, choices=[e.value for e in Provider])
    predict.add_argument("--complexity", required=True, choices=[e.value for e in Complexity])
    command("doctor", _doctor, "check config, outbox, permissions, disk, server", parents=[common])
    demo = command(
        "demo", _demo, "track events into a temp outbox and deliver them to a loopback server"
    )
    demo.add_argument("--events", type=int, default=5, help="how many events (default 5)")
    return parser


def _error(message: str, *, level: str = "error") -> None:
    print(f"{PROG}: {level}: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    with _sdk_logs(debug) as logs:
        args.logs = logs
        try:
            code: int = args.handler(args, out or sys.stdout)
        except SystemExit as exc:  # args.parser.error() in a handler: a usage error
            return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
        except KeyboardInterrupt:
            if debug:
                raise
            _error("interrupted")
            return 130
        except Exception as exc:
            if debug:
                raise
            _error(_one_line(str(exc)) or type(exc).__name__)
            return EXIT_PROBLEM
    return code
