"""Benchmarks of mosaic_telemetry beside its physical floor and its peers, in one run.

    python benchmarks/run.py            # the full run (about 5 minutes), as in docs/performance.md
    python benchmarks/run.py --quick    # a smoke run in well under a minute (CI runs it)

Prints one Markdown table (figure | ours | baseline/peer | ratio | target | result), then the
machine, the versions and the command. Every time is the median over rounds, every ratio the
median of per-round ratios of two contenders measured back to back. A MISS is information,
not a failure: the exit status is 0 unless a benchmark itself crashed. A peer that is not
installed is reported as "skipped (not installed)".
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sqlite3
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import at_rest
import attrs
import contention
import latency
import throughput
from common import PEERS, Sink, median_of, peer_version, ratio_of, temp_dir


@attrs.frozen
class Settings:
    """How much each figure measures."""

    calls: int  # track() calls per round, durability="normal"
    rounds: int
    full_calls: int  # per round, durability="full" (each call waits for an fsync)
    full_rounds: int
    contention_calls: int  # per process and round
    contention_rounds: int
    drain_events: int
    drain_rounds: int
    import_rounds: int
    idle_seconds: float
    rss_events: int
    flushes: int


FULL = Settings(20_000, 5, 20_000, 3, 5_000, 3, 50_000, 3, 15, 60.0, 100_000, 1_000)
QUICK = Settings(2_000, 2, 300, 2, 300, 1, 5_000, 1, 5, 5.0, 10_000, 200)


@attrs.frozen
class Row:
    """One line of the table."""

    figure: str
    ours: str
    baseline: str = "-"
    ratio: str = "-"
    target: str = "-"
    result: str = "info"


def _us(value: float) -> str:
    return f"{value:,.1f} µs" if value < 10_000 else f"{value / 1000:,.1f} ms"


def _x(value: float) -> str:
    return f"{value:.2f}×"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# --- figures -----------------------------------------------------------------------------------
def latency_rows(settings: Settings, folder: pathlib.Path, peer_sink: Sink) -> list[Row]:
    rows: list[Row] = []
    for number, durability, calls, rounds in (
        (1, "normal", settings.calls, settings.rounds),
        (4, "full", settings.full_calls, settings.full_rounds),
    ):
        found, skipped = latency.run(
            durability=durability, calls=calls, rounds=rounds, folder=folder, sink=peer_sink
        )
        ours, floor = found["ours"].rounds, found["floor_sqlite"].rounds
        name = f"{number}. track(), durability={durability!r}, {calls:,} calls x {rounds}"
        ratio = ratio_of(ours, floor, "median")
        rows.append(
            Row(
                f"{name}: median",
                _us(median_of(ours, "median")),
                f"{found['floor_sqlite'].label}: {_us(median_of(floor, 'median'))}",
                _x(ratio),
                "≤ 1.5× floor (a)",
                _verdict(ratio <= 1.5),
            )
        )
        for key in ("p99", "max"):
            rows.append(
                Row(
                    f"{name}: {key}",
                    _us(median_of(ours, key)),
                    f"floor (a): {_us(median_of(floor, key))}",
                    _x(ratio_of(ours, floor, key)),
                )
            )
        idle = found["ours_idle"].rounds
        rows.append(
            Row(
                f"{name}: median without a running worker (client not started)",
                _us(median_of(idle, "median")),
                f"floor (a): {_us(median_of(floor, 'median'))}",
                _x(ratio_of(idle, floor, "median")),
            )
        )
        peers: list[tuple[str, str, float | None]] = [
            ("floor_queue", "-", None),
            ("pq_equal", "< 1× (faster)", 1.0),
            ("pq_defaults", "< 1× (faster)" if durability == "full" else "-", 1.0),
            ("posthog", "≤ 4×", 4.0),
            ("segment", "≤ 4×", 4.0),
        ]
        for key, target, limit in peers:
            contender = found.get(key)
            if contender is None:
                continue
            ratio = ratio_of(ours, contender.rounds, "median")
            has_target = target != "-" and limit is not None
            if has_target and limit == 1.0:
                ok = ratio < 1.0
            else:
                ok = limit is not None and ratio <= limit
            rows.append(
                Row(
                    f"{number}. median vs {contender.label}",
                    _us(median_of(ours, "median")),
                    _us(median_of(contender.rounds, "median")),
                    _x(ratio),
                    target,
                    _verdict(ok) if has_target else "info",
                )
            )
        for distribution, reason in skipped.items():
            rows.append(Row(f"{number}. vs {distribution}", "-", reason, result="skipped"))
    return rows


def contention_rows(settings: Settings, folder: pathlib.Path, sink: Sink) -> list[Row]:
    ours: list[dict[str, float]] = []
    plain: list[dict[str, float]] = []
    for _ in range(settings.contention_rounds):
        ours.append(contention.run_round("ours", folder, sink.url, settings.contention_calls))
        sink.reset()
        plain.append(contention.run_round("plain", folder, sink.url, settings.contention_calls))
    name = (
        f"2. track(), {contention.PROCESSES} processes x {contention.THREADS} threads x "
        f"{settings.contention_calls:,} calls "
        f"at {contention.RATE:,.0f}/s each, workers draining"
    )
    base = "plain sqlite3 INSERT, same load"
    p99, top = median_of(ours, "p99"), median_of(ours, "max")
    handed = median_of(ours, "handed_off")
    calls = median_of(ours, "calls")
    return [
        Row(
            f"{name}: p99",
            _us(p99),
            f"{base}: {_us(median_of(plain, 'p99'))}",
            _x(ratio_of(ours, plain, "p99")),
            "≤ 2 ms",
            _verdict(p99 <= 2000),
        ),
        Row(
            f"{name}: max",
            _us(top),
            f"{base}: {_us(median_of(plain, 'max'))}",
            _x(ratio_of(ours, plain, "max")),
            "≤ 20 ms",
            _verdict(top <= 20_000),
        ),
        Row(
            f"{name}: median",
            _us(median_of(ours, "median")),
            f"{base}: {_us(median_of(plain, 'median'))}",
            _x(ratio_of(ours, plain, "median")),
        ),
        Row(
            f"{name}: spooled (outbox locked > 1 ms)",
            f"{handed:,.0f} of {calls:,.0f} ({handed / calls:.2%})",
            f"lost: {median_of(ours, 'lost'):,.0f}",
        ),
    ]


def throughput_rows(
    settings: Settings, folder: pathlib.Path, fake: Sink, peer_sink: Sink
) -> list[Row]:
    found, skipped = throughput.run(
        folder=folder,
        fake=fake,
        peer_sink=peer_sink,
        count=settings.drain_events,
        rounds=settings.drain_rounds,
    )
    count = settings.drain_events
    drain = median_of(found["drain"], "rate")
    delivered = min(r["delivered"] for r in found["drain"])
    rows = [
        Row(
            f"3. delivery: {count:,} pending events drained to FakeTelemetryServer",
            f"{drain:,.0f} events/s",
            f"all delivered: {delivered >= count}",
            "-",
            "≥ 10,000 events/s",
            _verdict(drain >= 10_000 and delivered >= count),
        )
    ]
    ours = found["e2e_ours"]
    rows.append(
        Row(
            f"3. delivery end to end: track {count:,} events until flush() returns",
            f"{median_of(ours, 'rate'):,.0f} events/s",
        )
    )
    for key, label in (("e2e_posthog", "PostHog"), ("e2e_segment", "Segment")):
        if key not in found:
            continue
        theirs = found[key]
        ratio = statistics.median(o["rate"] / t["rate"] for o, t in zip(ours, theirs, strict=True))
        rows.append(
            Row(
                f"3. delivery end to end vs {label} ({count:,} events to a loopback sink)",
                f"{median_of(ours, 'rate'):,.0f} events/s",
                f"{label}: {median_of(theirs, 'rate'):,.0f} events/s "
                f"({min(r['delivered'] for r in theirs):,.0f} arrived)",
                _x(ratio),
                "≥ 1×",
                _verdict(ratio >= 1.0),
            )
        )
    for distribution, reason in skipped.items():
        rows.append(Row(f"3. vs {distribution}", "-", reason, result="skipped"))
    return rows


def import_rows(settings: Settings) -> list[Row]:
    found = at_rest.import_times(settings.import_rounds)
    return [
        Row(
            f"5. import time (fresh interpreter, median of {settings.import_rounds})",
            f"{found['ours_ms']:.1f} ms",
            f"import requests: {found['requests_ms']:.1f} ms",
            _x(found["ratio"]),
            "≤ 0.8× requests",
            _verdict(found["ratio"] <= 0.8),
        )
    ]


def idle_row(found: dict[str, Any]) -> Row:
    seconds = found["seconds"]
    return Row(
        f"5. CPU of an idle started client over {seconds:.0f} s",
        f"{found['cpu_ms']:.1f} ms",
        f"threads: {', '.join(found['threads'])}",
        "-",
        f"≤ {50 * seconds / 60:.0f} ms" + ("" if seconds >= 60 else " (50 ms per 60 s)"),
        _verdict(found["cpu_ms"] <= 50 * seconds / 60),
    )


def rest_rows(settings: Settings, fake: Sink) -> list[Row]:
    rss = at_rest.rss_growth(fake.url, settings.rss_events)
    threads = at_rest.thread_count(fake.url, settings.flushes)
    others = [name for name in threads["added"] if "worker" not in name]
    return [
        Row(
            f"5. RSS growth while {settings.rss_events:,} events pass through",
            f"{rss['growth_mb']:.1f} MB",
            f"RSS {rss['before_mb']:.1f} → {rss['after_mb']:.1f} MB, "
            f"{rss['delivered']:,} delivered",
            "-",
            "≤ 10 MB",
            _verdict(rss["growth_mb"] <= 10),
        ),
        Row(
            f"5. threads added by one client after {threads['flushes']:,} flush() calls",
            f"{threads['workers']} worker" + (f" + {', '.join(others)}" if others else ""),
            "-",
            "-",
            "exactly 1 worker, nothing else",
            _verdict(threads["workers"] == 1 and not others),
        ),
    ]


# --- output ------------------------------------------------------------------------------------
def table(rows: Sequence[Row]) -> str:
    header = ("figure", "ours", "baseline / peer", "ratio", "target", "result")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = (row.figure, row.ours, row.baseline, row.ratio, row.target, row.result)
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(load_before: Sequence[float]) -> str:
    from mosaic_telemetry._version import get_version

    versions = {
        "mosaic_telemetry": get_version(),
        **{name: peer_version(name) or "-" for name in ("attrs", "cattrs", "requests")},
        **{name: peer_version(name) or "not installed" for name in PEERS},
    }
    load_after = os.getloadavg()
    return "\n".join(
        [
            f"- machine: {platform.platform()}, {_cpu_model()}, {os.cpu_count()} CPUs",
            f"- Python {platform.python_version()} ({platform.python_implementation()}), "
            f"SQLite {sqlite3.sqlite_version}",
            "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
            f"- load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run in under a minute")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    load_before = os.getloadavg()
    started = time.monotonic()
    rows: list[Row] = []
    crashed = False

    def section(name: str, build: Callable[[], list[Row]]) -> None:
        nonlocal crashed
        print(f"... {name}", file=sys.stderr, flush=True)
        try:
            rows.extend(build())
        except Exception as exc:
            crashed = True
            traceback.print_exc()
            rows.append(Row(name, "-", f"{type(exc).__name__}: {exc}"[:200], result="ERROR"))

    with temp_dir("run") as tmp, Sink("fake") as fake, Sink("peer") as peer_sink:
        folder = pathlib.Path(tmp)
        idle = at_rest.start_idle(fake.url, settings.idle_seconds)  # counts only itself
        section("1, 4. track() latency", lambda: latency_rows(settings, folder, peer_sink))
        section("2. contention", lambda: contention_rows(settings, folder, peer_sink))
        section("3. delivery", lambda: throughput_rows(settings, folder, fake, peer_sink))
        section("5. import time", lambda: import_rows(settings))
        section("5. memory and threads", lambda: rest_rows(settings, fake))
        section(
            "5. idle CPU",
            lambda: [idle_row(at_rest.finish_idle(idle, settings.idle_seconds))],
        )
    mode = "quick (smoke) run: small samples, idle window 5 s" if args.quick else "full run"
    print(f"## mosaic_telemetry benchmarks: {mode}\n")
    print(table(rows))
    print()
    print(machine(load_before))
    command = " ".join(["python", os.path.relpath(sys.argv[0]), *(argv or sys.argv[1:])])
    print(f"- command: `{command}` ({time.monotonic() - started:.0f} s)")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
