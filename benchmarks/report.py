"""The runner's table: rows, their formatting and their verdicts. Pure functions only.

Every figure of issue 15's target table is one or more :class:`Row`; a row with a target
says PASS or MISS, one without says ``info``; a figure that could not be measured says
``skipped`` (a peer not installed, a platform without ``/proc``) or ``ERROR`` (it crashed).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

__all__ = ["Row", "at_least", "at_most", "ms", "parse_switches", "table", "us", "verdict", "x"]


@attrs.frozen
class Row:
    """One line of the table."""

    figure: str
    ours: str
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    result: str = "info"


def us(value: float) -> str:
    """Microseconds, as µs below 10 ms and as ms from there."""
    return f"{value:,.1f} µs" if value < 10_000 else f"{value / 1000:,.1f} ms"


def ms(value: float) -> str:
    """Milliseconds, with one decimal."""
    return f"{value:,.1f} ms"


def x(value: float) -> str:
    """A ratio."""
    return f"{value:.2f}×"


def verdict(ok: bool) -> str:
    """PASS or MISS."""
    return "PASS" if ok else "MISS"


def at_most(value: float, limit: float) -> str:
    """PASS when ``value <= limit`` (a time or a ratio where lower is better)."""
    return verdict(value <= limit)


def at_least(value: float, limit: float) -> str:
    """PASS when ``value >= limit`` (a rate or a ratio where higher is better)."""
    return verdict(value >= limit)


def table(rows: Sequence[Row]) -> str:
    """The rows as one Markdown table (a ``|`` inside a cell becomes ``/``)."""
    header = ("figure", "ours", "baseline / peer", "ratio", "target", "result")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = (row.figure, row.ours, row.baseline, row.ratio, row.target, row.result)
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def parse_switches(status: str) -> int:
    """Context switches (voluntary + involuntary) in a ``/proc/<pid>/task/<tid>/status`` text.

    A thread blocked in a wait makes none: each one is a wake-up (or a preemption)."""
    total = 0
    found = 0
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            total += int(value)
            found += 1
    if found != 2:
        raise ValueError("no context switch counts in this status text")
    return total
