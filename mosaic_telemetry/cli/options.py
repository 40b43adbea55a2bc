"""What every command shares: its common options, argument types, and which config and file.

A command module registers itself with :func:`register`-style functions taking the
``commands`` sub-parser group and :func:`common` as a parent parser. The helpers that resolve
the configuration and the outbox import the SDK when a command runs, never at import time.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO, TypeAlias

if TYPE_CHECKING:
    from .._config import TelemetryConfig
    from .._store import OutboxReader

__all__ = [
    "Handler",
    "Subparsers",
    "add_command",
    "common",
    "config",
    "non_negative",
    "open_reader",
    "outbox_path",
    "point_in_time",
    "positive_seconds",
    "usable_config",
]

#: A command: parsed arguments and the output stream in, exit code out.
Handler = Callable[[argparse.Namespace, TextIO], int]
#: The group of sub-commands a command module adds itself to.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_command(
    commands: Subparsers,
    name: str,
    handler: Handler,
    help: str,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """A sub-command ``name`` whose ``description`` is its ``help`` and that runs ``handler``."""
    sub = commands.add_parser(name, help=help, description=help, **kwargs)
    sub.set_defaults(handler=handler, parser=sub)
    return sub


def common() -> argparse.ArgumentParser:
    """Options every command but ``demo`` takes (given after the command)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--outbox",
        metavar="PATH",
        help="the outbox file (default: the one the MOSAIC_TELEMETRY_* settings resolve to)",
    )
    parent.add_argument("--json", action="store_true", help="print JSON")
    # SUPPRESS: a default here would overwrite a --debug given before the command.
    parent.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="tracebacks"
    )
    return parent


def non_negative(text: str) -> int:
    """An argument type: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_seconds(text: str) -> float:
    """An argument type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


_AGE_UNITS: Final = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(s|min|m|h|d|w)")


def point_in_time(text: str, *, now: Callable[[], float] = time.time) -> float:
    """An argument type: a time as epoch seconds, from ISO 8601, epoch seconds or an age.

    ``2026-11-27T00:11:02Z`` (no offset: UTC), ``2026-11-27`` (midnight UTC),
    ``1795738262`` (epoch seconds) or ``90s``, ``15m``, ``2h``, ``7d``, ``1w`` (that long ago).
    """
    value = text.strip()
    age = _AGE.fullmatch(value.lower())
    if age:
        return now() - float(age.group(1)) * _AGE_UNITS[age.group(2)]
    try:
        epoch = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(epoch):
            return epoch
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in "Zz" else value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (give an ISO 8601 time like 2026-11-27T00:11:02Z, "
            "epoch seconds, or an age like 90s, 15m, 2h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def config(args: argparse.Namespace) -> TelemetryConfig:
    """The configuration from MOSAIC_TELEMETRY_* with ``--outbox`` as the outbox path."""
    from .._config import TelemetryConfig

    return TelemetryConfig(outbox_path=args.outbox)


def usable_config(args: argparse.Namespace, *, purpose: str) -> TelemetryConfig:
    """The configuration, refused when telemetry is disabled or in dry-run mode."""
    from .._exceptions import TelemetryError

    settings = config(args)
    if not settings.enabled:
        raise TelemetryError(f"telemetry is disabled (MOSAIC_TELEMETRY_ENABLED): no {purpose}")
    if settings.dry_run:
        raise TelemetryError(f"dry run is on (MOSAIC_TELEMETRY_DRY_RUN): no {purpose}")
    return settings


def outbox_path(args: argparse.Namespace) -> Path:
    """``--outbox``, else the file the MOSAIC_TELEMETRY_* settings resolve to."""
    if args.outbox is not None:
        return Path(args.outbox).expanduser()
    return config(args).resolved_outbox_path()


def open_reader(args: argparse.Namespace) -> OutboxReader:
    """A reader of the chosen outbox; a missing file is an error naming where we looked."""
    from .._exceptions import OutboxError
    from .._store import OutboxReader

    path = outbox_path(args)
    if not path.exists():
        hint = "" if args.outbox is not None else " (from MOSAIC_TELEMETRY_*; pick one: --outbox)"
        raise OutboxError(f"no outbox file at {path}{hint}")
    return OutboxReader(path)
