"""Keeping the file small: WAL checkpoints within a budget, and space given back.

The WAL. Every commit appends whole pages to the ``-wal`` (about 8 KiB for one ``add()``), and
only a checkpoint copies them into the database and lets the WAL be truncated. ``add()``
connections checkpoint (PASSIVE) when the WAL reaches 1000 pages, once in about 500 inserts,
and the worker once a cycle (:func:`checkpoint`). Moving that work off the ``track()`` path to
a background thread was measured (issue 15) and made ``track()`` slower on a 2-core machine:
median 37 -> 49 us, p99 0.16 -> 0.35 ms, and about 7 % of the events of a tracking loop
spooled while the thread's TRUNCATE held the write lock. The thread remains for a WAL that
outgrows its budget all the same (checked every :data:`CHECK_EVERY` inserts, one ``stat``).
The budget is 4 MiB, or a quarter of the free space of the file system when that is less: on a
tiny or nearly full file system the WAL is checkpointed and truncated long before it fills the
disk, so there is always room left to write the acks that free more.

Space given back. Rows delivered leave free pages in the file; SQLite reuses them, but never
gives them back to the file system by itself (``auto_vacuum`` is off: incremental auto-vacuum
costs every insert a pointer-map page now and then, 3-6 % of ``add()`` in a quick measure).
Instead the worker runs ``VACUUM`` when the outbox is nearly empty (:func:`give_space_back`):
the file is at least 4 MiB and at least 3/4 of it is free, so the VACUUM copies little and the
file shrinks at least four-fold. After a drain of 1,000,000 events the file is back to a few
pages at the next idle cycle. Never inside ``track()``.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import threading
from collections.abc import Callable
from typing import Final

from .._exceptions import OutboxError
from .schema import ADD_WAL_AUTOCHECKPOINT, MAIN_WAL_AUTOCHECKPOINT

__all__ = [
    "CHECK_EVERY",
    "WAL_LIMIT",
    "WalWatch",
    "checkpoint",
    "fit_autocheckpoint",
    "give_space_back",
    "wal_budget",
    "wal_size",
]

#: add() looks at the WAL's size once per this many inserts (one stat: about 1 µs).
CHECK_EVERY: Final = 32
WAL_LIMIT: Final = 4 * 1024 * 1024  # the journal_size_limit too
WAL_FLOOR: Final = 64 * 1024
#: VACUUM only a file this big whose free pages are at least this share of it.
VACUUM_MIN_BYTES: Final = 4 * 1024 * 1024
VACUUM_FREE_SHARE: Final = 0.75


def wal_size(path: pathlib.Path) -> int:
    """Bytes of the ``-wal`` beside ``path`` (0 when there is none)."""
    try:
        return os.stat(f"{path}-wal").st_size
    except OSError:
        return 0


def wal_budget(path: pathlib.Path) -> int:
    """How big the WAL may grow before it is checkpointed and truncated."""
    try:
        info = os.statvfs(path.parent)
    except (OSError, AttributeError):
        return WAL_LIMIT
    free = info.f_bavail * info.f_frsize
    return max(WAL_FLOOR, min(WAL_LIMIT, free // 4))


def fit_autocheckpoint(conn: sqlite3.Connection, path: pathlib.Path, *, fast: bool) -> bool:
    """Set ``conn``'s autocheckpoint for the room left on the disk; True when it is tight.

    On a small or nearly full file system every connection checkpoints (PASSIVE: waits for
    nobody) once the WAL reaches its budget, so the WAL starts over instead of growing: a WAL
    that fills the disk blocks every later write, even the acks that would free space, and a
    background checkpoint comes too late against a tracking loop (it waits for a gap between
    writers). That is the one checkpoint left on the track() path (``fast``), on such a disk
    only. Elsewhere every connection checkpoints at 4 MiB.
    """
    budget = wal_budget(path)
    tight = budget < WAL_LIMIT
    if tight:
        pages = max(16, budget // 4096)
    else:
        pages = ADD_WAL_AUTOCHECKPOINT if fast else MAIN_WAL_AUTOCHECKPOINT
    with contextlib.suppress(sqlite3.Error):
        conn.execute(f"PRAGMA wal_autocheckpoint = {pages}").fetchall()
    return tight


def checkpoint(conn: sqlite3.Connection, path: pathlib.Path, *, truncate: bool = False) -> None:
    """Copy the WAL into the database (PASSIVE: waits for nobody); when it is over its budget
    (or ``truncate``), also wait for readers and truncate it to zero bytes."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    if truncate or wal_size(path) > wal_budget(path):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def give_space_back(conn: sqlite3.Connection, path: pathlib.Path) -> bool:
    """VACUUM a nearly empty file (see the module docstring); True when it did."""
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    if pages * page_size < VACUUM_MIN_BYTES or free < pages * VACUUM_FREE_SHARE:
        return False
    conn.execute("VACUUM")
    with contextlib.suppress(sqlite3.Error):  # readers may hold old pages: next cycle then
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return True


class WalWatch:
    """add()'s look at the WAL every few inserts, and the background checkpoint it may start."""

    def __init__(
        self,
        path: pathlib.Path,
        read: Callable[[str], contextlib.AbstractContextManager[sqlite3.Connection]],
    ) -> None:
        self._path = path
        self._read = read
        self._inserts = 0
        self._every = CHECK_EVERY
        self._thread: threading.Thread | None = None

    def after_insert(self, conn: sqlite3.Connection) -> None:
        """Count one insert on ``conn`` (an add() connection); look at the WAL now and then."""
        self._inserts += 1
        if self._inserts < self._every:
            return
        self._inserts = 0
        if fit_autocheckpoint(conn, self._path, fast=True):
            self._every = 4  # a tight disk: each insert adds about 8 KiB to the WAL
            return
        self._every = CHECK_EVERY
        if wal_size(self._path) > WAL_LIMIT:
            self._checkpoint_soon()

    def _checkpoint_soon(self) -> None:
        """A process without a worker: truncate the WAL on a short-lived thread of its own."""
        running = self._thread
        if running is not None and running.is_alive():
            return

        def run() -> None:
            with contextlib.suppress(OutboxError), self._read("checkpoint") as conn:
                checkpoint(conn, self._path, truncate=True)

        self._thread = threading.Thread(target=run, name="mosaic-telemetry-checkpoint")
        self._thread.daemon = True
        self._thread.start()

    def after_fork_in_child(self) -> None:
        """The parent's thread is not here."""
        self._thread = None
        self._inserts = 0
