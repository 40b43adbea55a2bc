"""``mosaic-telemetry doctor``: check config, outbox file, permissions, disk and server."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from . import options
from .format import EXIT_OK, EXIT_PROBLEM, PROG, one_line, print_json

if TYPE_CHECKING:
    from .._config import TelemetryConfig

__all__ = ["DOCTOR_TIMEOUT_SECONDS", "LOW_DISK_BYTES", "Check", "register", "run"]

#: ``doctor`` warns when the outbox's file system has less free space than this.
LOW_DISK_BYTES: Final = 100 * 1024 * 1024
#: ``doctor`` waits at most this long for the server.
DOCTOR_TIMEOUT_SECONDS: Final = 5.0

Check = tuple[str, str, str]  # (status: ok|warn|fail, name, detail)


def register(commands: options.Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``doctor`` to the command line."""
    options.add_command(
        commands, "doctor", run, "check config, outbox, permissions, disk, server", parents=[common]
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Check config, outbox file, permissions, disk and server; one line per check."""
    config = options.config(args)
    path = options.outbox_path(args)
    checks = [
        _check_config(config),
        *_check_outbox(path, config),
        _check_permissions(path),
        _check_disk(path),
        _check_server(config),
    ]
    if args.json:
        print_json(out, [{"check": n, "status": s, "detail": d} for s, n, d in checks])
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
    from .._exceptions import OutboxError
    from .._store import OutboxReader

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
        detail = f"{path} belongs to {status.server_url}, config says {config.server_url}"
        checks.append(("fail", "outbox", detail))
    else:
        detail = (
            f"{path} (quick_check ok, schema {status.schema_version}, "
            f"{status.pending} pending, {status.dead} dead)"
        )
        checks.append(("ok", "outbox", detail))
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
    import shutil

    free = shutil.disk_usage(_existing_dir(path)).free
    mib = free / (1024 * 1024)
    if free < LOW_DISK_BYTES:
        return "warn", "disk", f"only {mib:.0f} MiB free next to the outbox"
    return "ok", "disk", f"{mib / 1024:.1f} GiB free"


def _check_server(config: TelemetryConfig) -> Check:
    from .._delivery.api import TelemetryApi
    from .._delivery.transport import RequestsTransport
    from .._enums import Complexity, Provider, TaskType
    from .._exceptions import TelemetryError
    from .._models import PredictionQuery

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
        return "fail", "server", one_line(str(exc))
    finally:
        transport.close()
    return "ok", "server", f"{url} answered in {(time.monotonic() - started) * 1000:.0f} ms"
