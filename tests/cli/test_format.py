"""How the command line prints times, spans, sizes, tables and one-line texts."""

from __future__ import annotations

import io

import pytest

from mosaic_telemetry.cli.format import duration, one_line, size, table, when


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5.0, "0 s"),
        (0.0, "0 s"),
        (59.4, "59 s"),
        (60.0, "1 min 0 s"),
        (3599.0, "59 min 59 s"),
        (3600.0, "1 h 0 min"),
        (47 * 3600 + 59 * 60, "47 h 59 min"),
        (48 * 3600, "2 d 0 h"),
        (10 * 86400 + 5 * 3600, "10 d 5 h"),
    ],
)
def test_duration_picks_the_unit(seconds: float, shown: str) -> None:
    """Spans read as seconds, minutes, hours or days; a negative span (clock step) is 0 s."""
    assert duration(seconds) == shown


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536 * 1024, "1.5 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (2048 * 1024**3, "2048.0 GiB"),
    ],
)
def test_size_picks_the_unit(count: int, shown: str) -> None:
    """Byte counts read in B, KiB, MiB or GiB."""
    assert size(count) == shown


def test_when_is_utc_seconds_or_a_dash() -> None:
    """An epoch second is shown in UTC with a Z; None is a dash."""
    assert when(0) == "1970-01-01T00:00:00Z"
    assert when(1795738262.9) == "2026-11-27T00:11:02Z"
    assert when(None) == "-"


def test_table_aligns_columns_without_trailing_blanks() -> None:
    """Columns are as wide as their widest cell, two spaces apart, and lines end at text."""
    out = io.StringIO()
    table(out, ["ID", "NOTE"], [["1", ""], ["100", "leased"]])
    assert out.getvalue() == "ID   NOTE\n1\n100  leased\n"


def test_one_line_folds_whitespace() -> None:
    """Newlines and runs of blanks in a server's text become single spaces."""
    assert one_line("  bad\n\tthing  happened \r\n") == "bad thing happened"
