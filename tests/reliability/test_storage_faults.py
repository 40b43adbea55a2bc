"""Scenario 5: storage faults. Garbage in the outbox file, a truncated WAL, a read-only
directory, a full disk (a real size-limited tmpfs when this machine lets us mount one, and
SQLite's own SQLITE_FULL through max_page_count everywhere) and the file deleted while the
client runs. The host never sees an exception, the log says what happened once, and nothing
already durable is lost.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mosaic_telemetry import TelemetryClient, TelemetryConfig
from mosaic_telemetry._store import schema as schema_module
from mosaic_telemetry.testing import FakeTelemetryServer

from ..helpers import make_events
from .conftest import Child, child_program, run_program, wait_until

Config = Callable[..., TelemetryConfig]

TRACK_AND_EXIT = """
for event in make_events({count}):
    client.track(event)
print(json.dumps({{"tracked": client.stats()["tracked"]}}))
"""


def _mine(records: list[logging.LogRecord], level: int = logging.WARNING) -> list[str]:
    return [
        r.getMessage()
        for r in records
        if r.name.startswith("mosaic_telemetry") and r.levelno >= level
    ]


def _stored(server: FakeTelemetryServer) -> set[str]:
    return {e["event_id"] for e in server.events}


# --- the file deleted while the client runs ---------------------------------------------------
@pytest.mark.parametrize("what", ["the file", "file, -wal and -shm", "the whole directory"])
def test_outbox_deleted_while_running_is_recreated_without_loss(
    what: str,
    server: FakeTelemetryServer,
    make_config: Config,
    outbox_path: Path,
    caplog: pytest.LogCaptureFixture,
    report: Callable[..., None],
) -> None:
    """Rows written before and after an rm of the outbox move to a new file and are all sent."""
    client = TelemetryClient(make_config(shutdown_timeout_seconds=1.0))
    client.start()
    before, after = make_events(10), make_events(10)
    for event in before:
        client.track(event)
    if what == "the whole directory":
        subprocess.run(["rm", "-rf", str(outbox_path.parent)], check=True)
    else:
        suffixes = [""] if what == "the file" else ["", "-wal", "-shm"]
        for suffix in suffixes:
            os.unlink(f"{outbox_path}{suffix}")
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        for event in after:  # these land in the unlinked file until the worker notices
            client.track(event)
        server.stop()  # nothing can be sent: the rows must be in the new file
        assert client.flush(timeout=10).remaining == 20
        client.stop()
    assert outbox_path.exists()
    assert oct(outbox_path.stat().st_mode & 0o777) == "0o600"
    assert oct(outbox_path.parent.stat().st_mode & 0o777) == "0o700"
    recreated = [m for m in _mine(caplog.records) if "deleted or replaced" in m]
    assert len(recreated) == 1, _mine(caplog.records)
    server.start()
    with TelemetryClient(make_config()) as restarted:
        assert restarted.flush(timeout=20).remaining == 0
    expected = {str(e.event_id) for e in before + after}
    report(
        "storage",
        case=f"deleted while running: {what}",
        tracked=20,
        delivered_after_restart=len(_stored(server) & expected),
        lost=len(expected - _stored(server)),
        log_lines=len(recreated),
    )
    assert _stored(server) == expected


# --- garbage bytes in the file ------------------------------------------------------------------
@pytest.mark.parametrize("where", ["the header", "a middle page"])
def test_garbage_in_an_outbox_never_reaches_the_host(
    where: str,
    server: FakeTelemetryServer,
    make_config: Config,
    outbox_path: Path,
    caplog: pytest.LogCaptureFixture,
    report: Callable[..., None],
) -> None:
    """Garbage over a file with pending events: no exception, one error, the bytes kept aside."""
    run_program(child_program(server.url, outbox_path, TRACK_AND_EXIT.format(count=300)))
    data = bytearray(outbox_path.read_bytes())
    offset = 0 if where == "the header" else 4096 * 3
    data[offset : offset + 4096] = os.urandom(4096)
    outbox_path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        with TelemetryClient(make_config()) as client:
            fresh = make_events(3)
            for event in fresh:
                client.track(event)
            result = client.flush(timeout=20)
        client.stats()
    assert result.remaining == 0
    assert {str(e.event_id) for e in fresh} <= _stored(server)
    aside = [
        p
        for p in outbox_path.parent.iterdir()
        if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))
    ]
    lines = _mine(caplog.records)
    report(
        "storage",
        case=f"garbage in {where}",
        moved_aside=bool(aside),
        old_rows_delivered=len(server.events) - 3,
        log_lines=len(lines),
    )
    if aside:  # moved aside: byte for byte what was there, for `sqlite3` forensics
        assert any(p.read_bytes() == bytes(data) for p in aside)
        assert len([m for m in lines if "corrupt" in m]) == 1, lines
    else:  # SQLite could still read it: then what it reads is delivered
        assert len(server.events) > 3


# --- a truncated WAL ------------------------------------------------------------------------------
WAL_WRITER = """
import sqlite3
for event in make_events(40):
    client.track(event)
db = sqlite3.connect(config.outbox_path)
db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()   # these 40 are in the main file now
db.close()
print("checkpointed", flush=True)
for event in make_events(40):
    client.track(event)
    print(event.event_id, flush=True)
print("done", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("keep", [0.6, 0.0])
def test_truncated_wal_keeps_every_checkpointed_event(
    keep: float,
    server: FakeTelemetryServer,
    make_config: Config,
    outbox_path: Path,
    report: Callable[..., None],
) -> None:
    """A WAL cut short after a SIGKILL: the file opens, and every intact commit is delivered."""
    child = Child(child_program(server.url, outbox_path, WAL_WRITER))
    assert child.wait_for_line(lambda line: line == "done"), child.stderr
    child.kill()
    assert child.process.returncode == -signal.SIGKILL
    tail = child.lines[child.lines.index("checkpointed") + 1 : child.lines.index("done")]
    wal = Path(f"{outbox_path}-wal")
    size = wal.stat().st_size
    os.truncate(wal, int(size * keep))
    with TelemetryClient(make_config()) as client:
        assert client.flush(timeout=20).remaining == 0
    stored = _stored(server)
    recovered_tail = [event_id for event_id in tail if event_id in stored]
    report(
        "storage",
        case=f"WAL truncated to {keep:.0%}",
        checkpointed=40,
        checkpointed_delivered=len(stored) - len(recovered_tail),
        wal_tail_events=len(tail),
        wal_tail_recovered=len(recovered_tail),
    )
    assert len(stored) - len(recovered_tail) == 40, "a checkpointed event was lost"
    assert recovered_tail == tail[: len(recovered_tail)], "recovered commits are a prefix"


# --- read-only directory and full disk ------------------------------------------------------------
@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount a size-limited tmpfs under tmp_path (skips where mounting is not permitted)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        target = tmp_path / f"fs{len(mounted)}"
        target.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(target)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_read_only_directory_keeps_durable_events_and_runs_from_memory(
    server: FakeTelemetryServer,
    make_config: Config,
    mount_tmpfs: Callable[[str], Path],
    caplog: pytest.LogCaptureFixture,
    report: Callable[..., None],
) -> None:
    """An outbox on a read-only mount: one error, new events sent from memory, old ones kept."""
    outbox = mount_tmpfs("4m") / "outbox.sqlite3"
    run_program(child_program(server.url, outbox, TRACK_AND_EXIT.format(count=5)))
    subprocess.run(["mount", "-o", "remount,ro", str(outbox.parent)], check=True)
    with (
        caplog.at_level(logging.WARNING, logger="mosaic_telemetry"),
        TelemetryClient(make_config(outbox_path=outbox)) as client,
    ):
        fresh = make_events(5)
        for event in fresh:
            client.track(event)
        assert client.stats()["durable"] is False
        assert client.flush(timeout=20).remaining == 0
    errors = _mine(caplog.records, logging.ERROR)
    assert len(errors) == 1, errors
    assert {str(e.event_id) for e in fresh} == _stored(server)
    subprocess.run(["mount", "-o", "remount,rw", str(outbox.parent)], check=True)
    with TelemetryClient(make_config(outbox_path=outbox)) as client:
        assert client.flush(timeout=20).remaining == 0
    report(
        "storage",
        case="read-only directory",
        delivered_from_memory=5,
        durable_delivered_after_rw=len(server.events) - 5,
        lost=10 - len(server.events),
        error_lines=len(errors),
    )
    assert len(server.events) == 10


def _fill(directory: Path) -> Path:
    """Write a file until the file system is full; returns it."""
    filler = directory / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


@pytest.mark.parametrize("kind", ["tmpfs", "max_page_count"])
def test_full_disk_never_raises_and_loses_nothing(
    kind: str,
    server: FakeTelemetryServer,
    make_config: Config,
    outbox_path: Path,
    mount_tmpfs: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    report: Callable[..., None],
) -> None:
    """With the disk full, track() keeps returning, one error is logged, and all is sent later."""
    if kind == "tmpfs":
        outbox = mount_tmpfs("4m") / "outbox.sqlite3"
    else:  # SQLite's own "database or disk is full", from a page budget on every connection
        outbox = outbox_path
        monkeypatch.setattr(
            schema_module, "PRAGMAS", (*schema_module.PRAGMAS, "PRAGMA max_page_count = 40")
        )
    client = TelemetryClient(make_config(outbox_path=outbox, max_queue_size=100_000))
    client.start()
    first = make_events(5)
    for event in first:
        client.track(event)
    assert client.flush(timeout=20).remaining == 0
    client.stop()  # no sending while we fill: the disk must really run full, whatever the timing
    filler = _fill(outbox.parent) if kind == "tmpfs" else None
    during = make_events(300)
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        for event in during:
            client.track(event)  # must neither raise nor block
        stats = client.stats()
        held = client._current_outbox().intake_counts().held
        client.start()
        if filler is not None:
            client.flush(timeout=10)  # nothing can be claimed while the disk is full
            filler.unlink()
        # Each cycle writes what fits, sends it and so frees room for the next.
        assert wait_until(lambda: client.flush(timeout=30).remaining == 0, timeout=60)
    client.stop()
    expected = {str(e.event_id) for e in first + during}
    errors = _mine(caplog.records, logging.ERROR)
    report(
        "storage",
        case=f"full disk ({kind})",
        tracked=len(expected),
        spooled_while_full=stats["handed_off"],
        held_in_memory_while_full=held,
        lost_counter=stats["lost"],
        delivered=len(_stored(server) & expected),
        lost=len(expected - _stored(server)),
        error_lines=len(errors),
    )
    assert stats["invalid"] == 0
    assert _stored(server) == expected
    # The outbox was full: events went to the spool, or (the spool's disk full too) to memory.
    assert stats["handed_off"] > 0 or (held > 0 and not stats["durable"]), "the disk was never full"
    # Once each: the failed write (track() and the worker's retries share one line) and, on
    # a real full disk, the spool failing too (events held in memory) and the failed claim of
    # the sender; never one line per event or cycle.
    assert 1 <= len(errors) <= 3, errors


# --- a tiny file system: the WAL must not fill it ----------------------------------------------
def test_a_tiny_file_system_keeps_delivering(
    server: FakeTelemetryServer,
    make_config: Config,
    mount_tmpfs: Callable[[str], Path],
    report: Callable[..., None],
) -> None:
    """On a 2 MiB tmpfs the WAL is checkpointed and truncated, so delivery frees space: all sent.

    Each autocommit insert appends whole pages to the WAL (about 8 KiB). A process that only
    tracks never checkpointed before its WAL reached 4 MiB: 250 events filled the 2 MiB while
    the database stayed tiny, and then not even a claim could be written (0 of 500 delivered).
    """
    outbox = mount_tmpfs("2m") / "outbox.sqlite3"
    client = TelemetryClient(make_config(outbox_path=outbox, submit_interval_seconds=0.2))
    events = make_events(500)
    wal_peak = 0
    for event in events:  # not started: nothing is sent while these are tracked
        client.track(event)
        wal = Path(f"{outbox}-wal")
        wal_peak = max(wal_peak, wal.stat().st_size if wal.exists() else 0)
    durable = client.stats()["durable"]
    client.start()
    delivered = wait_until(lambda: client.flush(timeout=10).remaining == 0, timeout=60)
    client.stop()
    stored = _stored(server)
    expected = {str(e.event_id) for e in events}
    report(
        "storage",
        case="2 MiB file system",
        tracked=len(events),
        delivered=len(stored & expected),
        lost=len(expected - stored),
        wal_peak_bytes=wal_peak,
        durable_while_tracking=durable,
    )
    assert delivered and stored == expected
    assert durable, "events had to be held in memory: the WAL filled the disk"


# --- a recreate that fails, and files put where the outbox was ---------------------------------
def test_a_failed_recreate_keeps_its_rows_and_retries_every_cycle(
    server: FakeTelemetryServer,
    make_config: Config,
    outbox_path: Path,
    caplog: pytest.LogCaptureFixture,
    report: Callable[..., None],
) -> None:
    """The outbox directory replaced by a file: the rows read from the lost file and the events
    tracked meanwhile wait (not durable, said once) until the directory is back; none is lost."""
    server.stop()  # nothing leaves: every event must survive in the SDK
    client = TelemetryClient(make_config(submit_interval_seconds=0.1))
    client.start()
    before, during = make_events(10), make_events(10)
    for event in before:
        client.track(event)
    directory = outbox_path.parent
    directory.rename(directory.with_name("moved-away"))
    directory.write_text("a file where the outbox directory was")
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        for event in during:
            client.track(event)
        for _ in range(3):  # several cycles, each trying again
            client.flush(timeout=10)
        broken = client.stats()
        directory.unlink()  # the directory can be made again
        assert wait_until(lambda: client.flush(timeout=10).remaining == 20, timeout=30)
    healed = client.stats()
    server.start()
    assert client.flush(timeout=20).remaining == 0
    client.stop()
    lines = [m for m in _mine(caplog.records, logging.ERROR) if "cannot be recreated" in m]
    expected = {str(e.event_id) for e in before + during}
    report(
        "storage",
        case="outbox directory replaced by a file",
        tracked=20,
        delivered=len(_stored(server) & expected),
        lost=len(expected - _stored(server)),
        durable_while_broken=broken["durable"],
        error_lines=len(lines),
    )
    assert _stored(server) == expected
    assert (broken["durable"], healed["durable"]) == (False, True)
    assert len(lines) == 1, lines


def test_a_database_moved_over_the_outbox_is_moved_aside_untouched(
    server: FakeTelemetryServer,
    make_config: Config,
    outbox_path: Path,
    tmp_path: Path,
    report: Callable[..., None],
) -> None:
    """Another application's database put at the outbox's path is never written (our old WAL
    is never replayed into it): it is moved aside byte for byte, and our events all go out."""
    import sqlite3

    foreign = tmp_path / "invoices.sqlite3"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER)")
        db.executemany("INSERT INTO invoices (total) VALUES (?)", [(n,) for n in range(50)])
    db.close()
    foreign_bytes = foreign.read_bytes()
    server.stop()
    client = TelemetryClient(make_config(submit_interval_seconds=3600))
    client.start()
    before, after = make_events(10), make_events(10)
    for event in before:
        client.track(event)  # in the WAL: the file on disk does not have them yet
    os.replace(foreign, outbox_path)
    for event in after:
        client.track(event)
    assert client.flush(timeout=10).remaining == 20
    aside = [p for p in outbox_path.parent.iterdir() if ".foreign-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == foreign_bytes
    with sqlite3.connect(f"file:{aside[0]}?mode=ro&immutable=1", uri=True) as db:
        assert db.execute("SELECT COUNT(*), SUM(total) FROM invoices").fetchone() == (50, 1225)
    db.close()
    server.start()
    assert client.flush(timeout=20).remaining == 0
    client.stop()
    expected = {str(e.event_id) for e in before + after}
    report(
        "storage",
        case="a foreign database moved over the outbox",
        foreign_untouched=True,
        delivered=len(_stored(server) & expected),
        lost=len(expected - _stored(server)),
    )
    assert _stored(server) == expected


WAL_THEN_WAIT = """
for event in make_events(40):
    client.track(event)
print("tracked", flush=True)
sys.stdin.readline()       # the test deleted the -wal (and -shm): go on
client.start()             # the worker's first connection sees only the new, empty -wal...
client.flush(timeout=10)   # ...and its cycle must notice that the old one is gone
print("cycled", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("side", ["-wal", "-wal and -shm"])
def test_a_deleted_wal_is_noticed_like_a_deleted_file(
    side: str,
    server: FakeTelemetryServer,
    make_config: Config,
    outbox_path: Path,
    report: Callable[..., None],
) -> None:
    """40 events only in the WAL, the -wal deleted, the next cycle, then a SIGKILL: all 40 are
    in the recreated file (before, they died with the deleted WAL's inode)."""
    server.stop()
    child = Child(child_program(server.url, outbox_path, WAL_THEN_WAIT))
    assert child.wait_for_line(lambda line: line == "tracked"), child.stderr
    for suffix in ["-wal"] + (["-shm"] if "shm" in side else []):
        os.unlink(f"{outbox_path}{suffix}")
    child.say("go")
    assert child.wait_for_line(lambda line: line == "cycled"), child.stderr
    child.kill()
    server.start()
    with TelemetryClient(make_config()) as restarted:
        assert restarted.flush(timeout=20).remaining == 0
    report(
        "storage", case=f"{side} deleted while running", tracked=40, delivered=len(_stored(server))
    )
    assert len(_stored(server)) == 40


# --- files we don't own -----------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_an_outbox_another_user_owns_is_refused_and_never_written(
    server: FakeTelemetryServer,
    make_config: Config,
    outbox_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outbox file of uid 4242: memory fallback, one error naming path, owner and mode; the
    file is never written (not even chmodded), and the events are still delivered."""
    run_program(child_program(server.url, outbox_path, TRACK_AND_EXIT.format(count=3)))
    os.chown(outbox_path, 4242, 4242)
    before = (outbox_path.read_bytes(), outbox_path.stat().st_mode, outbox_path.stat().st_mtime_ns)
    with (
        caplog.at_level(logging.ERROR, logger="mosaic_telemetry"),
        TelemetryClient(make_config()) as client,
    ):
        fresh = make_events(3)
        for event in fresh:
            client.track(event)
        assert client.stats()["durable"] is False
        assert client.flush(timeout=20).remaining == 0
    errors = _mine(caplog.records, logging.ERROR)
    assert len(errors) == 1, errors
    assert str(outbox_path) in errors[0] and "uid 4242" in errors[0] and "mode 0600" in errors[0]
    assert {str(e.event_id) for e in fresh} <= _stored(server)
    after = (outbox_path.read_bytes(), outbox_path.stat().st_mode, outbox_path.stat().st_mtime_ns)
    assert after == before
