"""How the command line prints: JSON, tables, times, sizes, one-line errors, the SDK's log lines.

Every command writes its data to the ``out`` stream it is given and its errors, one line each,
to stderr through :func:`error`. Nothing here imports more than the standard library and the
SDK's logger, so ``--help`` and ``status`` stay cheap to start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Final, TextIO

from .._log import logger

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PROBLEM",
    "EXIT_USAGE",
    "PROG",
    "LogCapture",
    "duration",
    "error",
    "hint",
    "one_line",
    "print_json",
    "sdk_logs",
    "size",
    "table",
    "when",
]

EXIT_OK: Final = 0
EXIT_PROBLEM: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_BROKEN_PIPE: Final = 141  # 128 + SIGPIPE: the reader closed the pipe, as `| head` does
PROG: Final = "mosaic-telemetry"


def print_json(out: TextIO, value: object) -> None:
    """``value`` as indented JSON and a newline (anything JSON lacks is shown with ``str``)."""
    out.write(json.dumps(value, indent=2, default=str) + "\n")


def when(epoch: float | None) -> str:
    """An epoch second as ``2026-11-27T00:11:02Z`` (UTC), or ``-`` for none."""
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(seconds: float) -> str:
    """A span for people: ``42 s``, ``3 min 5 s``, ``5 h 2 min``, ``3 d 4 h`` (negative: 0 s)."""
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


def size(count: int) -> str:
    """A byte count in B, KiB, MiB or GiB."""
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns two spaces apart, the header first, no trailing blanks."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        out.write("  ".join(cells).rstrip() + "\n")


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(text.split())


def error(message: str, *, level: str = "error") -> None:
    """``mosaic-telemetry: error: message`` on stderr."""
    print(f"{PROG}: {level}: {message}", file=sys.stderr)


def hint(*parts: str) -> None:
    """``(part; part)`` on stderr: a note for people, never mixed into the data on stdout."""
    print(f"({'; '.join(parts)})", file=sys.stderr)


class LogCapture(logging.Handler):
    """Keeps the SDK's warnings and errors of one command, to show their text to the user."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def sdk_logs(debug: bool) -> Iterator[LogCapture]:
    """Capture the ``mosaic_telemetry`` logger for one command; with ``--debug`` also print it."""
    capture = LogCapture()
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
