"""The benchmark runner's pure parts: statistics, ratios, verdicts and the table it prints.

Running the benchmarks themselves is not a test (they take minutes and their figures depend
on the machine): ``tox -e bench-smoke`` runs ``python benchmarks/run.py --quick`` in CI.
"""

from __future__ import annotations

import pathlib
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402
import report  # noqa: E402


def test_percentile_is_nearest_rank() -> None:
    """p50 of 1..100 is 50, p99 is 99, p100 the largest; the order of samples does not matter."""
    samples = list(range(100, 0, -1))
    assert [common.percentile(samples, f) for f in (0.5, 0.99, 1.0)] == [50, 99, 100]
    assert [common.percentile(samples, f) for f in (0.07, 0.0)] == [7, 1]
    assert common.percentile([7.0], 0.99) == 7.0


def test_summary_is_in_microseconds() -> None:
    """A round of nanosecond samples becomes its median, p99 and max in µs, and its size."""
    found = common.summary([1_000, 3_000, 2_000, 100_000])
    assert found == {"median": 2.5, "p99": 100.0, "max": 100.0, "n": 4.0}


def test_ratio_is_the_median_of_per_round_ratios() -> None:
    """Each round's ratio is taken back to back, then the median; not a ratio of medians."""
    ours = [{"p": 2.0}, {"p": 30.0}, {"p": 4.0}]
    base = [{"p": 1.0}, {"p": 10.0}, {"p": 1.0}]
    assert common.ratio_of(ours, base, "p") == 3.0  # ratios 2, 3, 4
    assert common.median_of(ours, "p") / common.median_of(base, "p") == 4.0  # not this


def test_a_round_without_a_baseline_is_left_out_of_the_ratio() -> None:
    """A baseline of 0 (nothing measured) does not divide by zero: that round is skipped."""
    assert common.ratio_of([{"p": 2.0}, {"p": 9.0}], [{"p": 1.0}, {"p": 0.0}], "p") == 2.0


def test_rounds_of_unequal_count_are_refused() -> None:
    """Ratios pair rounds measured back to back: a missing round is an error, not a shift."""
    with pytest.raises(ValueError, match=r"shorter|longer"):
        common.ratio_of([{"p": 1.0}], [{"p": 1.0}, {"p": 2.0}], "p")


@pytest.mark.parametrize(
    ("value", "limit", "most", "least"),
    [(2.0, 2.0, "PASS", "PASS"), (2.01, 2.0, "MISS", "PASS"), (1.99, 2.0, "PASS", "MISS")],
)
def test_verdicts_include_the_limit(value: float, limit: float, most: str, least: str) -> None:
    """A figure exactly at its target passes either way; the limit is inclusive."""
    assert (report.at_most(value, limit), report.at_least(value, limit)) == (most, least)


def test_units() -> None:
    """Times below 10 ms print in µs, above in ms; ratios with two decimals."""
    assert report.us(48.04) == "48.0 µs"
    assert report.us(12_345.0) == "12.3 ms"
    assert report.ms(1234.56) == "1,234.6 ms"
    assert report.x(1.0 / 3) == "0.33×"


def test_table_is_markdown_with_one_line_per_row() -> None:
    """A header, a rule and one line per row; a '|' inside a cell cannot break the table."""
    rows = [
        report.Row("1. a | b", "1 µs", "2 µs", "0.50×", "≤ 1×", "PASS"),
        report.Row("2. info", "3 µs"),
    ]
    assert report.table(rows).splitlines() == [
        "| figure | ours | baseline / peer | ratio | target | result |",
        "|---|---|---|---|---|---|",
        "| 1. a / b | 1 µs | 2 µs | 0.50× | ≤ 1× | PASS |",
        "| 2. info | 3 µs | - | - | - | info |",
    ]


def test_context_switches_are_read_from_a_proc_status_text() -> None:
    """Voluntary and involuntary switches are added; a text without them is an error."""
    status = (
        "Name:\tmosaic-telemetry\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n"
    )
    assert report.parse_switches(status) == 15
    with pytest.raises(ValueError, match="no context switch"):
        report.parse_switches("Name:\tx\n")
