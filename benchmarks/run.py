"""Benchmarks of mosaic_telemetry beside its floors and its peers: issue 15's table, in one run.

    python benchmarks/run.py            # the full run (1,000,000 events through one file)
    python benchmarks/run.py --quick    # a smoke run in well under a minute (CI runs it)

Prints one Markdown table (figure | ours | baseline/peer | ratio | target | result) with every
row of issue 15's target table, then the machine, the versions and the command. Every time is
the median over rounds, every ratio the median of per-round ratios of two contenders measured
back to back, so a noisy neighbour slows both sides instead of skewing the ratio. A MISS is
information, not a failure: the exit status is 0 unless a benchmark itself crashed (then its
rows say ERROR). A peer that is not installed is reported as "skipped (not installed)".
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import at_rest
import attrs
import contention
import latency
import outbox_file
import throughput
from common import PEERS, Sink, median_of, peer_version, ratio_of, temp_dir
from report import Row, at_least, at_most, ms, table, us, verdict, x


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
    fake_batches: int  # batches of 100 posted to FakeTelemetryServer per round
    fake_rounds: int
    scale_events: int  # tracked, then drained, through one outbox file
    status_rounds: int
    import_rounds: int
    idle_seconds: float
    rss_events: int
    flushes: int
    shutdown_timeout: float


FULL = Settings(
    20_000, 5, 20_000, 3, 5_000, 3, 50_000, 3, 200, 3, 1_000_000, 7, 15, 60.0, 100_000, 1_000, 2.0
)
QUICK = Settings(2_000, 2, 300, 2, 300, 1, 3_000, 1, 20, 1, 10_000, 3, 5, 5.0, 5_000, 100, 1.0)

#: Slack allowed to stop() beyond shutdown_timeout_seconds: thread joins and file closes.
STOP_SLACK = 0.5


# --- figures -----------------------------------------------------------------------------------
def _info_rows(number: int, found: dict[str, latency.Contender], keys: Sequence[str]) -> list[Row]:
    ours = found["ours"].rounds
    rows = []
    for key in keys:
        contender = found.get(key)
        if contender is None:
            continue
        rows.append(
            Row(
                f"{number}. p50 vs {contender.label}",
                us(median_of(ours, "median")),
                us(median_of(contender.rounds, "median")),
                x(ratio_of(ours, contender.rounds, "median")),
            )
        )
    return rows


def _tail_rows(name: str, found: dict[str, latency.Contender]) -> list[Row]:
    ours, floor = found["ours"].rounds, found["floor_unique"].rounds
    idle = found["ours_idle"].rounds
    rows = [
        Row(
            f"{name}: {key}",
            us(median_of(ours, key)),
            f"raw INSERT: {us(median_of(floor, key))}",
            x(ratio_of(ours, floor, key)),
        )
        for key in ("p99", "max")
    ]
    rows.append(
        Row(
            f"{name}: p50 without a running worker (client not started)",
            us(median_of(idle, "median")),
            f"raw INSERT: {us(median_of(floor, 'median'))}",
            x(ratio_of(idle, floor, "median")),
        )
    )
    return rows


def latency_rows(settings: Settings, folder: pathlib.Path, sink: Sink) -> list[Row]:
    found, skipped = latency.run(
        durability="normal",
        calls=settings.calls,
        rounds=settings.rounds,
        folder=folder,
        sink=sink,
    )
    each = f"{settings.calls:,} calls x {settings.rounds}"
    build, build_floor = found["ours_build"].rounds, found["floor_build"].rounds
    ours, floor = found["ours"].rounds, found["floor_unique"].rounds
    ratio_build = ratio_of(build, build_floor, "median")
    ratio = ratio_of(ours, floor, "median")
    name = f"2. track(), durability='normal', {each}"
    rows = [
        Row(
            f"1. build() + track(), durability='normal', {each}: p50",
            us(median_of(build, "median")),
            f"json.dumps(wire dict) + raw INSERT, UNIQUE text key: "
            f"{us(median_of(build_floor, 'median'))}",
            x(ratio_build),
            "≤ 2.5×",
            at_most(ratio_build, 2.5),
        ),
        Row(
            f"{name}: p50",
            us(median_of(ours, "median")),
            f"raw INSERT, UNIQUE text key, WAL, synchronous=NORMAL: "
            f"{us(median_of(floor, 'median'))}",
            x(ratio),
            "≤ 2×",
            at_most(ratio, 2.0),
        ),
        *_tail_rows(name, found),
    ]
    keys = ("floor_plain", "floor_queue", "pq_equal", "pq_defaults", "posthog", "segment")
    rows += _info_rows(2, found, keys)
    rows += [Row(f"2. vs {d}", "-", why, result="skipped") for d, why in skipped.items()]
    return rows


def full_rows(settings: Settings, folder: pathlib.Path, sink: Sink) -> list[Row]:
    found, skipped = latency.run(
        durability="full",
        calls=settings.full_calls,
        rounds=settings.full_rounds,
        folder=folder,
        sink=sink,
    )
    ours, floor = found["ours"].rounds, found["floor_unique"].rounds
    ratio = ratio_of(ours, floor, "median")
    name = f"3. track(), durability='full', {settings.full_calls:,} calls x {settings.full_rounds}"
    rows = [
        Row(
            f"{name}: p50",
            us(median_of(ours, "median")),
            f"raw INSERT, UNIQUE text key, WAL, synchronous=FULL: {us(median_of(floor, 'median'))}",
            x(ratio),
            "≤ 1.1×",
            at_most(ratio, 1.1),
        ),
        *_tail_rows(name, found),
    ]
    rows += _info_rows(3, found, ("floor_plain", "pq_defaults"))
    rows += [Row(f"3. vs {d}", "-", why, result="skipped") for d, why in skipped.items()]
    return rows


def contention_rows(settings: Settings, folder: pathlib.Path, sink: Sink) -> list[Row]:
    ours: list[dict[str, float]] = []
    plain: list[dict[str, float]] = []
    for _ in range(settings.contention_rounds):
        ours.append(contention.run_round("ours", folder, sink.url, settings.contention_calls))
        sink.reset()
        plain.append(contention.run_round("plain", folder, sink.url, settings.contention_calls))
    name = (
        f"4. track(), {contention.PROCESSES} processes x {contention.THREADS} threads, "
        f"{settings.contention_calls:,} calls each at {contention.RATE:,.0f}/s, workers draining"
    )
    base = "raw INSERT, same load"
    p99, top = median_of(ours, "p99"), median_of(ours, "max")
    top_ratio = ratio_of(ours, plain, "max")
    handed = median_of(ours, "handed_off")
    calls = median_of(ours, "calls")
    return [
        Row(
            f"{name}: p99",
            us(p99),
            f"{base}: {us(median_of(plain, 'p99'))}",
            x(ratio_of(ours, plain, "p99")),
            "≤ 2 ms",
            at_most(p99, 2000),
        ),
        Row(f"{name}: max", us(top), "-", "-", "≤ 20 ms", at_most(top, 20_000)),
        Row(
            f"{name}: max vs the raw insert's max",
            us(top),
            f"{base}: {us(median_of(plain, 'max'))}",
            x(top_ratio),
            "≤ 0.5×",
            at_most(top_ratio, 0.5),
        ),
        Row(
            f"{name}: p50",
            us(median_of(ours, "median")),
            f"{base}: {us(median_of(plain, 'median'))}",
            x(ratio_of(ours, plain, "median")),
        ),
        Row(
            f"{name}: not written to the outbox at once (outbox locked)",
            f"{handed:,.0f} of {calls:,.0f} ({handed / calls:.2%})",
            f"lost: {median_of(ours, 'lost'):,.0f}",
        ),
    ]


def drain_rows(settings: Settings, folder: pathlib.Path, sink: Sink) -> list[Row]:
    count = settings.drain_events
    found, skipped = throughput.run(
        folder=folder, sink=sink, count=count, rounds=settings.drain_rounds
    )
    ours = found["ours"]
    rate = median_of(ours, "rate")
    rows = [
        Row(
            f"5. drain of {count:,} queued events to the fast sink",
            f"{rate:,.0f} events/s",
            f"all delivered: {min(r['delivered'] for r in ours) >= count}",
        )
    ]
    for key, label, limit in (("posthog", "PostHog", 1.5), ("segment", "Segment", 1.2)):
        if key not in found:
            continue
        theirs = found[key]
        ratio = ratio_of(ours, theirs, "rate")
        rows.append(
            Row(
                f"5. drain vs {label}, its queue pre-filled with {count:,} events",
                f"{rate:,.0f} events/s",
                f"{label}: {median_of(theirs, 'rate'):,.0f} events/s "
                f"({min(r['delivered'] for r in theirs):,.0f} arrived)",
                x(ratio),
                f"≥ {limit}×",
                at_least(ratio, limit),
            )
        )
    rows += [Row(f"5. vs {d}", "-", why, result="skipped") for d, why in skipped.items()]
    fake = throughput.fake_server_rate(settings.fake_batches, settings.fake_rounds)
    ratio = fake["rate"] / rate
    rows.append(
        Row(
            "6. FakeTelemetryServer, one keep-alive client, batches of 100",
            f"{fake['rate']:,.0f} events/s",
            f"our drain: {rate:,.0f} events/s",
            x(ratio),
            "≥ 3×",
            at_least(ratio, 3.0),
        )
    )
    return rows


def file_rows(
    settings: Settings, folder: pathlib.Path, sink: Sink, log: Callable[[str], None]
) -> list[Row]:
    found = outbox_file.run(
        folder=folder,
        sink=sink,
        count=settings.scale_events,
        status_rounds=settings.status_rounds,
        log=log,
    )
    count, peak = found["count"], found["peak_bytes"]
    share = found["after_idle_bytes"] / peak
    mib = 2**20
    rows = [
        Row(
            f"7. outbox file after a {count:,}-event drain and one idle cycle",
            f"{found['after_idle_bytes'] / mib:,.1f} MiB",
            f"peak: {peak / mib:,.1f} MiB ({found['delivered']:,} delivered, "
            f"{found['remaining']:,} left)",
            f"{share:.1%} of peak",
            "≤ 10% of peak",
            at_most(share, 0.10),
        ),
        Row(
            f"7. outbox file right after the drain ({found['drain_seconds']:.0f} s)",
            f"{found['after_drain_bytes'] / mib:,.1f} MiB",
            f"{peak / max(found['pending'], 1):,.0f} bytes per event at the peak",
        ),
    ]
    for key, when in (("status_full", f"{found['pending']:,}"), ("status_empty", "0")):
        st = found[key]
        rows.append(
            Row(
                f"8. mosaic-telemetry status wall time, {when} pending",
                ms(st["status_ms"]),
                f"python -c sqlite3 COUNT(*): {ms(st['count_ms'])} ({st['rows']:,} rows)",
                x(st["ratio"]),
                "≤ 1.5×",
                at_most(st["ratio"], 1.5),
            )
        )
    return rows


def import_rows(settings: Settings) -> list[Row]:
    found = at_rest.import_times(settings.import_rounds)
    quick, bare, theirs = found["quick_start"], found["bare"], found["requests"]
    n = settings.import_rounds
    return [
        Row(
            f"9. import of the quick start (from mosaic_telemetry import ..., TelemetryClient, "
            f"...), fresh interpreter, median of {n}",
            ms(quick["ms"]),
            f"import requests: {ms(theirs['ms'])}",
            x(quick["ratio"]),
            "≤ 0.8× requests",
            at_most(quick["ratio"], 0.8),
        ),
        Row(
            f"9. import mosaic_telemetry alone, median of {n}",
            ms(bare["ms"]),
            f"import requests: {ms(theirs['ms'])}",
            x(bare["ratio"]),
        ),
    ]


def idle_rows(found: dict[str, Any]) -> list[Row]:
    seconds = found["seconds"]
    wakeups = found["wakeups"]
    window = f"over {seconds:.0f} s (interval 300 s)"
    rows = [
        Row(
            f"9. wake-ups of an idle started client's worker {window}",
            "-" if wakeups is None else f"{wakeups}",
            "context switches of the worker thread (/proc)",
            "-",
            "0",
            "skipped (no /proc)" if wakeups is None else verdict(wakeups == 0),
        ),
        Row(
            f"9. CPU of an idle started client {window}",
            ms(found["cpu_ms"]),
            f"threads: {', '.join(found['threads'])}",
        ),
    ]
    return rows


def rest_rows(settings: Settings, sink: Sink) -> list[Row]:
    rss = at_rest.rss_growth(sink.url, settings.rss_events)
    threads = at_rest.thread_count(sink.url, settings.flushes)
    stop = at_rest.stop_time(settings.shutdown_timeout)
    others = [name for name in threads["added"] if "worker" not in name]
    bound = stop["timeout"] + STOP_SLACK
    return [
        Row(
            f"9. RSS growth while {settings.rss_events:,} events pass through",
            f"{rss['growth_mb']:.1f} MB",
            f"RSS {rss['before_mb']:.1f} → {rss['after_mb']:.1f} MB, "
            f"{rss['delivered']:,} delivered",
            "-",
            "≤ 10 MB",
            at_most(rss["growth_mb"], 10),
        ),
        Row(
            f"9. threads added by one client after {threads['flushes']:,} flush() calls",
            f"{threads['workers']} worker" + (f" + {', '.join(others)}" if others else ""),
            "-",
            "-",
            "exactly 1 worker, nothing else",
            verdict(threads["workers"] == 1 and not others),
        ),
        Row(
            "9. stop() with the worker stuck in a request to a server that never answers",
            f"{stop['seconds']:.2f} s",
            f"shutdown_timeout_seconds={stop['timeout']:g}; {stop['kept']:,} events kept on disk",
            "-",
            f"≤ {bound:g} s (timeout + {STOP_SLACK:g} s)",
            at_most(stop["seconds"], bound),
        ),
    ]


# --- output ------------------------------------------------------------------------------------
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

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def section(name: str, build: Callable[[], list[Row]]) -> None:
        nonlocal crashed
        log(f"... {name} ({time.monotonic() - started:.0f} s)")
        try:
            rows.extend(build())
        except Exception as exc:
            crashed = True
            traceback.print_exc()
            rows.append(Row(name, "-", f"{type(exc).__name__}: {exc}"[:200], result="ERROR"))

    with temp_dir("run") as tmp, Sink("peer") as sink:
        folder = pathlib.Path(tmp)
        idle = at_rest.start_idle(sink.url, settings.idle_seconds)  # counts only itself
        section("1, 2. build() + track(), track()", lambda: latency_rows(settings, folder, sink))
        section("3. durability='full'", lambda: full_rows(settings, folder, sink))
        section("4. contention", lambda: contention_rows(settings, folder, sink))
        section("5, 6. drain, test server", lambda: drain_rows(settings, folder, sink))
        section("7, 8. file size, status", lambda: file_rows(settings, folder, sink, log))
        section("9. import time", lambda: import_rows(settings))
        section("9. memory, threads, stop()", lambda: rest_rows(settings, sink))
        section("9. idle", lambda: idle_rows(at_rest.finish_idle(idle, settings.idle_seconds)))
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
