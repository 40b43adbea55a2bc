"""``SqliteOutbox``: the durable outbox every tracked event is written to before ``track()``.

One class owns one SQLite file (WAL mode, format in :mod:`.schema`) that several threads and
several processes may share. Its methods are thin: each takes a connection from its database
(:class:`~.database.FileDatabase`) and runs the functions of :mod:`.queue`, :mod:`.leases`,
:mod:`.state` and :mod:`.repair` inside one transaction. The same class over an in-memory
database (:meth:`SqliteOutbox.in_memory`, :class:`~.memory.MemoryDatabase`) is the fallback
when the file cannot be used at all: one implementation, no drift.

Delivery flow: ``add()`` inserts a row; the worker ``claim()``-s a batch under a lease (owner
token, host, pid, expiry), sends it, then ``ack()``-s (deletes) what the server took,
``dead_letter()``-s what it rejected for its content, or ``release()``-s the rest for a later
retry. A lease that is never acked expires, and a lease whose process died on this host is
cleared at once by :meth:`SqliteOutbox.reclaim_orphaned_leases`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pathlib
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal

from .._exceptions import OutboxError
from .._log import logger
from . import queue, repair, state
from .database import Database, FileDatabase
from .evictions import EvictionLog
from .files import spool_dir_of
from .intake import Intake, IntakeCounts
from .leases import ClaimedRow, LeaseOwner
from .leasing import Leasing
from .memory import MemoryDatabase
from .schema import PROTECTED_META, SCHEMA_VERSION, SYNCHRONOUS
from .state import Ledger

__all__ = ["SqliteOutbox"]


class SqliteOutbox:
    """The durable outbox in one SQLite file, shared safely by threads and processes."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        durability: Literal["normal", "full"] = "normal",
        max_pending: int = 1000,
        server_url: str = "",
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        add_busy_timeout_ms: float = 0,
        busy_timeout_ms: int = 5000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if durability not in SYNCHRONOUS:
            raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {max_pending}")
        self.path = None if path is None else pathlib.Path(os.fspath(path)).expanduser().absolute()
        self._max_pending = max_pending
        self._clock = clock
        self._monotonic = monotonic
        self._intake: Intake | None = None
        defaults = {
            "schema_version": SCHEMA_VERSION,
            "server_url": server_url,
            "mode": "dry_run" if dry_run else "real",
            "created_at": repr(float(clock())),
        }
        self._db: Database
        if self.path is None:
            self._db = MemoryDatabase(defaults)
        else:
            self._db = FileDatabase(
                self.path,
                synchronous=SYNCHRONOUS[durability],
                defaults=defaults,
                clock=clock,
                add_busy_timeout_ms=add_busy_timeout_ms,
                busy_timeout_ms=busy_timeout_ms,
            )
        label = self._db.label
        self._evictions = EvictionLog(label, max_pending, monotonic=monotonic)
        #: The server the file was created for (the first writer's URL wins).
        self.server_url = self._db.server_url
        if self.path is not None:
            self._intake = Intake(
                self._db,
                spool_dir=spool_dir_of(self.path),
                synchronous=SYNCHRONOUS[durability],
                max_pending=max_pending,
                evictions=self._evictions,
                clock=clock,
            )
            try:
                self._intake.start()
            except OutboxError:  # a spool directory that is not ours: refuse the outbox
                self._db.close()
                raise
        self._leasing = Leasing(
            self._db,
            presence_of=lambda: None if self._intake is None else self._intake.presence,
            spool_dir=None if self.path is None else spool_dir_of(self.path),
            clock=clock,
            monotonic=monotonic,
        )
        _OUTBOXES.add(self)
        if self._intake is not None:
            # A restart after a kill -9 delivers at once: dead spools and leases, right away.
            try:
                self._intake.adopt_dead()
                self.reclaim_orphaned_leases()
            except OutboxError as exc:
                logger.warning("could not adopt what dead processes left in %s: %s", label, exc)

    @classmethod
    def in_memory(
        cls,
        *,
        max_pending: int = 1000,
        server_url: str = "",
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> SqliteOutbox:
        """The bounded memory fallback: the same outbox on an in-memory database, not durable.

        A forked child starts empty: the rows it inherits belong to the parent, which sends
        them.
        """
        return cls(
            None,
            max_pending=max_pending,
            server_url=server_url,
            dry_run=dry_run,
            clock=clock,
            monotonic=monotonic,
        )

    def __repr__(self) -> str:
        if self.path is None:
            return "SqliteOutbox.in_memory()"
        return f"SqliteOutbox({str(self.path)!r})"

    @property
    def durable(self) -> bool:
        """Whether every event accepted so far is on disk (False: the memory fallback, or
        events held in memory while neither the outbox nor the spool can be written)."""
        return self._db.durable and (self._intake is None or not self._intake.held)

    # --- adding -------------------------------------------------------------------------------
    def add(self, event_id: str, body: str) -> tuple[bool, int]:
        """Insert one event (one autocommit statement); ``(inserted, evicted)``.

        An existing ``event_id`` is a no-op ``(False, 0)``. When another writer (a process, or
        a thread of this one) holds the lock (for longer than ``add_busy_timeout_ms``; by
        default add() does not wait at all), or the write fails, the event goes to this
        process's spool instead (durable, moved into the outbox by :meth:`absorb`); only when
        that fails too is it held in memory (counted, logged, :attr:`durable` False). It never
        raises busy; OutboxError only once closed.
        """
        row = (event_id, body, self._clock())
        if self._intake is None:
            inserted, evicted = self._db.add(row, self._max_pending)
        else:
            inserted, evicted = self._intake.add(row)
        self._evictions.add(evicted)
        return inserted, evicted

    def add_many(self, items: Sequence[tuple[str, str]]) -> tuple[int, int]:
        """Insert events in one transaction with the patient timeout; ``(inserted, evicted)``."""
        if not items:
            return 0, 0
        now = self._clock()
        with self._db.write("add_many") as conn:
            inserted = queue.insert_many(conn, items, now)
            evicted = queue.evict(conn, self._max_pending)
        self._evictions.add(evicted)
        return inserted, evicted

    def absorb(self) -> int:
        """Move this process's spooled (and memory-held) events and the spools of dead
        processes into the outbox; returns how many rows were inserted.

        The worker calls it once a cycle, and ``stop()`` / interpreter exit when no worker
        runs. Idempotent by ``event_id``: a row moved twice is stored once.
        """
        return 0 if self._intake is None else self._intake.absorb()

    def spooled_count(self) -> int:
        """Events this process holds outside the outbox (its spool, and any held in memory)."""
        return 0 if self._intake is None else self._intake.waiting

    def held_in_memory(self) -> int:
        """Events accepted and not on disk, that a kill -9 would lose: the memory fallback's,
        the bounded overflow's (neither outbox nor spool could be written)."""
        if self._intake is None:
            return self.pending_count()
        return self._intake.held

    def intake_counts(self) -> IntakeCounts:
        """How this process's events got in: spooled, held in memory now, lost."""
        if self._intake is None:
            return IntakeCounts(spooled=0, held=0, lost=0)
        intake = self._intake
        return IntakeCounts(spooled=intake.spooled, held=intake.held, lost=intake.lost)

    # --- leases -----------------------------------------------------------------------------
    def lease_owner(self) -> LeaseOwner:
        """The owner this outbox's sender leases rows as: its presence token, host and pid.

        Its liveness is the presence lock, so no peer ever takes over its leases while it
        lives. (After a fork the child has a presence, and so an owner, of its own.)
        """
        return self._leasing.owner()

    def claim(self, owner: LeaseOwner, limit: int, lease_seconds: float) -> list[ClaimedRow]:
        """Lease up to ``limit`` unleased rows that are due, oldest first, to ``owner``.

        What this process spooled meanwhile moves in first, so batches stay full and in order.
        """
        if limit <= 0:
            return []
        if self._intake is not None and self._intake.waiting:
            with contextlib.suppress(OutboxError):  # reported by the next absorb()
                self._intake.absorb_own()
        return self._leasing.claim(owner, limit, lease_seconds)

    def renew(self, owner: LeaseOwner, row_ids: Sequence[int], lease_seconds: float) -> list[int]:
        """Extend the leases ``owner`` still holds; returns those row ids."""
        return self._leasing.renew(owner, row_ids, lease_seconds) if row_ids else []

    def release(
        self, owner: LeaseOwner, row_ids: Sequence[int], *, retry_at: float | None = None
    ) -> None:
        """Clear the leases ``owner`` still holds; with ``retry_at``, not claimable before it."""
        if row_ids:
            self._leasing.release(owner, row_ids, retry_at)

    def ack(
        self,
        delivered: Sequence[int],
        duplicates: Sequence[int] = (),
        *,
        dry_run: Sequence[int] = (),
    ) -> None:
        """Delete rows the server has (or a dry run did not send) and count them."""
        if not delivered and not duplicates and not dry_run:
            return
        with self._db.write("ack") as conn:
            queue.ack(conn, delivered, duplicates, dry_run)
        self._leasing.drop([*delivered, *duplicates, *dry_run])

    def dead_letter(self, rows: Sequence[tuple[int, str, int | None]]) -> int:
        """Move rows to ``dead`` with their reason and HTTP status; returns how many moved.

        The dead table keeps at most ``max_pending`` rows: older ones are evicted and counted.
        """
        if not rows:
            return 0
        with self._db.write("dead_letter") as conn:
            moved = queue.dead_letter(conn, rows, self._clock())
            evicted = queue.evict_dead(conn, self._max_pending)
        self._leasing.drop([r[0] for r in rows])
        self._evictions.add(evicted, "dead-lettered")
        return moved

    def reclaim_orphaned_leases(self, is_alive: Callable[[int], bool] | None = None) -> int:
        """Clear leases whose owner is gone (the rules: :mod:`.leases`); returns how many rows.

        Also releases this instance's own leases held past their lease time by the monotonic
        clock (a sender that never came back), whatever the wall clock says.
        """
        return self._leasing.reclaim(is_alive)

    # --- state --------------------------------------------------------------------------------
    def pending_count(self) -> int:
        """Rows waiting for delivery, leased or not (O(1): highest id - removed_count)."""
        with self._db.read("pending_count") as conn:
            return state.pending_count(conn)

    def leased_count(self) -> int:
        """Rows under a lease that has not expired."""
        with self._db.read("leased_count") as conn:
            return state.leased_count(conn, self._clock())

    def dead_count(self) -> int:
        """Rows in the dead-letter table."""
        with self._db.read("dead_count") as conn:
            return state.dead_count(conn)

    def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest waiting row was tracked, or None when there is none."""
        with self._db.read("oldest_pending_age") as conn:
            oldest = state.oldest_enqueued_at(conn)
        return None if oldest is None else max(0.0, self._clock() - oldest)

    def counters(self) -> dict[str, int]:
        """The persisted counters (at least :data:`~.schema.COUNTER_NAMES`)."""
        with self._db.read("counters") as conn:
            return state.counters(conn)

    def ledger(self) -> Ledger:
        """Where every event written to this file went (persisted; see :class:`Ledger`)."""
        with self._db.snapshot("ledger") as conn:
            return state.ledger(conn)

    def bump(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the persisted counter ``name``."""
        queue.check_counter_name(name)
        with self._db.write("bump") as conn:
            queue.bump(conn, name, n)

    def get_not_before(self) -> float:
        """The shared pause: no sending before this epoch second (0 when none)."""
        return self.get_pause()[0]

    def get_pause(self) -> tuple[float, float | None]:
        """The shared pause as ``(not_before, seconds it was set for)``; seconds may be None."""
        with self._db.read("get_pause") as conn:
            return state.get_pause(conn)

    def set_not_before(self, when: float, seconds: float | None = None) -> None:
        """Pause sending for every process sharing the file until ``when``.

        ``seconds`` is how long that is from now: a reader whose clock was stepped back waits
        at most that long, however far ahead ``when`` then lies.
        """
        with self._db.write("set_not_before") as conn:
            state.set_pause(conn, when, seconds)

    def get_meta(self, key: str) -> str | None:
        """One value of the ``meta`` table."""
        with self._db.read("get_meta") as conn:
            return state.get_meta(conn, key)

    def set_meta(self, key: str, value: str) -> None:
        """Set one value of the ``meta`` table (the identity keys cannot be changed)."""
        if key in PROTECTED_META:
            raise ValueError(f"meta key {key!r} is managed by the outbox itself")
        with self._db.write("set_meta") as conn:
            state.set_meta(conn, key, value)

    # --- the file -------------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Copy the WAL into the database without waiting for anyone (PASSIVE)."""
        self._db.checkpoint()

    def ensure_file(self) -> int:
        """Recreate the file if it was deleted or replaced while open; returns the rows moved.

        Without this, every write after an ``rm`` of the file (a tmp cleaner, a user freeing
        space) went into the unlinked inode and was lost when the process ended. The worker
        calls it once a cycle: what was written in between is still readable through the old
        connection and moves into the new file, so nothing already tracked is lost.
        """
        moved = self._db.ensure_file()
        if self._intake is not None:
            self._intake.ensure()
        return moved

    # --- predictions cache ----------------------------------------------------------------------
    def save_prediction(self, key: str, body: str, fetched_at: float) -> None:
        """Store one prediction reply (JSON text) under its query key."""
        with self._db.write("save_prediction") as conn:
            state.save_prediction(conn, key, body, fetched_at)

    def load_predictions(self) -> list[tuple[str, str, float]]:
        """Every stored prediction as ``(key, body, fetched_at)``."""
        with self._db.read("load_predictions") as conn:
            return state.load_predictions(conn)

    # --- inspection and repair ------------------------------------------------------------------
    def list_rows(self, *, dead: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
        """Rows of ``events`` (or ``dead``) oldest first, as dicts keyed by column name."""
        with self._db.read("list_rows") as conn:
            return state.list_rows(conn, dead=dead, limit=limit)

    def get_row(self, event_id: str) -> dict[str, Any] | None:
        """One event by id, pending or dead, with ``state`` set to "pending" or "dead"."""
        with self._db.read("get_row") as conn:
            found = state.get_row(conn, event_id)
        if found is None:
            return None
        table, row = found
        return {**row, "state": "dead" if table == "dead" else "pending"}

    def requeue(self, event_ids: Sequence[str] | None = None) -> int:
        """Move dead rows (all, or these event ids) back to pending with attempts reset."""
        with self._db.write("requeue") as conn:
            return repair.requeue(conn, event_ids, self._clock())

    def purge(self, *, dead_only: bool) -> int:
        """Delete every dead row (and every pending row unless ``dead_only``); returns count."""
        with self._db.write("purge") as conn:
            return repair.purge(conn, dead_only=dead_only)

    def close(self) -> None:
        """Move spooled events in, close this outbox's connections in this process and
        release its presence; later calls raise OutboxError."""
        if self._intake is not None:
            self._intake.close()
        self._evictions.flush()
        self._db.close()

    def _after_fork_in_child(self) -> None:
        self._leasing.after_fork_in_child()
        if self._intake is not None:
            self._intake.after_fork_in_child()
        self._db.after_fork_in_child()


#: Every outbox of this process, for the after-fork hook (a memory outbox starts empty).
_OUTBOXES: weakref.WeakSet[SqliteOutbox] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for outbox in list(_OUTBOXES):
        outbox._after_fork_in_child()


def _release_presences_at_exit() -> None:
    # Registered before the client's exit hook, so it runs after it (atexit is LIFO): the
    # clients have absorbed what they spooled by then. Connections stay open on purpose.
    for outbox in list(_OUTBOXES):
        intake = outbox._intake
        if intake is not None and intake.presence.held:  # held: by this very process
            with contextlib.suppress(Exception):
                intake.release_at_exit()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_release_presences_at_exit)
