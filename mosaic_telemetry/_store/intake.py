"""Intake: every event ``add()`` accepts is on disk before it returns, or counted in memory.

The chain is: the shared outbox (with a wait of about a millisecond), else this presence's
own spool (:mod:`.spool`, nobody else writes it), else, only when both fail to write (disk
full, I/O error), a bounded in-memory overflow: counted, logged once with the true count,
``durable`` False while it holds anything, and written out by :meth:`Intake.absorb` as soon as
the disk allows. :meth:`Intake.absorb` also moves the own spool into the outbox and adopts the
spools of dead presences (their lock is free): their rows move, their files go.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pathlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import attrs

from .._exceptions import OutboxBusyError, OutboxError
from .._log import RateLimitedLogger, logger
from . import leases, presence, queue
from .evictions import EvictionLog
from .files import NotOursError, check_file, move_aside
from .presence import LOCK_SUFFIX, Presence
from .spool import SPOOL_SUFFIX, Spool, delete_spool_files, read_spool, spool_path

__all__ = ["Intake", "IntakeCounts"]

#: Rows moved from a spool into the outbox per transaction.
ABSORB_BATCH: Final = 500

Row = tuple[str, str, float]


@attrs.frozen(kw_only=True)
class IntakeCounts:
    """What this process's intake did: events it ever wrote to its spool (the outbox was
    locked or failing), events held in memory right now (neither could be written), and
    events lost because the bounded memory overflow was full too."""

    spooled: int
    held: int
    lost: int


class _Writer(Protocol):
    """What the intake needs of the outbox's database."""

    label: str

    def add(self, row: Row, max_pending: int) -> tuple[bool, int]: ...
    def write(self, op: str) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...


class Intake:
    """Gets events on disk for one outbox: the outbox itself, a spool, or counted memory."""

    def __init__(
        self,
        db: _Writer,
        *,
        spool_dir: pathlib.Path,
        synchronous: str,
        max_pending: int,
        evictions: EvictionLog,
        clock: Callable[[], float],
    ) -> None:
        self._db = db
        self.spool_dir = spool_dir
        self._synchronous = synchronous
        self._max_pending = max_pending
        self._evictions = evictions
        self._clock = clock
        self.presence = Presence(spool_dir)
        self._spool = Spool(spool_path(spool_dir, self.presence.token), synchronous=synchronous)
        self._overflow: collections.deque[Row] = collections.deque()
        self._overflow_lock = threading.Lock()
        self._log = RateLimitedLogger(60.0)
        #: Events this process wrote to its spool, and events lost (the overflow was full).
        self.spooled = 0
        self.lost = 0

    # --- presence ---------------------------------------------------------------------------
    def start(self) -> None:
        """Take the presence lock (at open); without it, leases fall back to pids and clocks.

        Raises NotOursError when the spool directory belongs to someone else (or is writable
        by others): spools found there would be adopted and sent with our key.
        """
        try:
            self.presence.acquire()  # makes and checks the spool directory first
        except NotOursError:
            raise
        except (OSError, OutboxError) as exc:
            logger.warning(
                "cannot create the presence lock in %s (%s); leases of this process fall back "
                "to pid and clock checks",
                self.spool_dir,
                getattr(exc, "strerror", None) or exc,
            )

    def ensure(self) -> None:
        """Once a cycle: a presence lock file deleted under us is made again."""
        with contextlib.suppress(OSError):
            self.presence.ensure()

    @property
    def held(self) -> int:
        """Events in memory only (the overflow): while any, the outbox is not durable."""
        return len(self._overflow)

    @property
    def waiting(self) -> int:
        """Events in this process's spool or overflow, not yet in the outbox."""
        return self._spool.count + len(self._overflow)

    # --- the hot path -------------------------------------------------------------------------
    def add(self, row: Row) -> tuple[bool, int]:
        """Store one row: outbox, else spool, else overflow; ``(inserted, evicted)``."""
        try:
            return self._db.add(row, self._max_pending)
        except OutboxBusyError:
            pass
        except OutboxError as exc:
            if "is closed" in str(exc):
                raise
            self._log.error(
                "outbox-write",
                "telemetry outbox write failed (%s); events go to this process's spool until it "
                "works again",
                exc,
            )
        return self._to_spool(row)

    def _to_spool(self, row: Row) -> tuple[bool, int]:
        try:
            self.presence.acquire()  # a no-op while held; a deleted lock file: ensure()
            added = self._spool.add([row])
        except (OutboxError, OSError) as exc:
            return self._hold([row], exc)
        self.spooled += added
        return bool(added), 0

    def _hold(self, rows: Sequence[Row], exc: BaseException) -> tuple[bool, int]:
        with self._overflow_lock:
            room = max(0, self._max_pending - len(self._overflow))
            self._overflow.extend(rows[:room])
            lost = len(rows) - room if len(rows) > room else 0
            self.lost += lost
            held, total_lost = len(self._overflow), self.lost
        if lost:
            self._log.error(
                "overflow-full",
                "telemetry events lost: outbox and spool unwritable (%s) and %d events already "
                "held in memory; %d lost so far",
                exc,
                held,
                total_lost,
            )
        else:
            self._log.error(
                "overflow",
                "telemetry outbox and spool both unwritable (%s); %d event(s) held in memory "
                "(not durable) until the disk accepts them",
                exc,
                held,
            )
        return not lost, 0

    # --- moving spooled rows into the outbox ---------------------------------------------------
    def absorb(self) -> int:
        """Move the overflow, the own spool and dead presences' spools into the outbox."""
        return self.absorb_own() + self.adopt_dead()

    def absorb_own(self) -> int:
        """Move this process's overflow and spool into the outbox."""
        return self._write_overflow() + self._drain_own_spool()

    def _insert(self, rows: Sequence[Row]) -> int:
        with self._db.write("absorb") as conn:
            inserted = queue.insert_rows(conn, rows)
            evicted = queue.evict(conn, self._max_pending)
        self._evictions.add(evicted)
        return inserted

    def _write_prefix(self, rows: Sequence[Row]) -> tuple[int, int]:
        """Write ``rows`` into the outbox in batches: ``(committed, inserted)``, the rows of
        the committed prefix and how many of them were new there.

        On a nearly full disk a batch that does not fit is retried smaller, down to one row,
        so what fits is written (and sent, freeing room for the rest). Raises only when not
        even the first row could be written.
        """
        done = inserted = 0
        batch = ABSORB_BATCH
        while done < len(rows):
            try:
                inserted += self._insert(rows[done : done + batch])
            except OutboxBusyError:
                if done:
                    return done, inserted
                raise
            except OutboxError:
                if batch > 1:
                    batch = max(1, batch // 8)
                    continue
                if done:
                    return done, inserted
                raise
            done += min(batch, len(rows) - done)
        return done, inserted

    def _write_overflow(self) -> int:
        with self._overflow_lock:
            rows = list(self._overflow)
        if not rows:
            return 0
        try:
            written, inserted = self._write_prefix(rows)
        except OutboxError:
            try:
                self.presence.acquire()
                self._spool.add(rows)
            except (OutboxError, OSError):
                return 0  # still nowhere to write: kept, counted, retried next cycle
            written, inserted = len(rows), 0
        with self._overflow_lock:
            for _ in range(written):
                self._overflow.popleft()
            left = len(self._overflow)
        logger.warning(
            "wrote %d telemetry event(s) held in memory to disk; %d still held, %d lost in all",
            written,
            left,
            self.lost,
        )
        return inserted

    def _drain_own_spool(self) -> int:
        moved = 0
        while rows := self._spool.take(ABSORB_BATCH):
            written, inserted = self._write_prefix(
                [(r.event_id, r.body, r.enqueued_at) for r in rows]
            )
            self._spool.forget(rows[:written])  # after the commit: a crash here moves them again
            moved += inserted
            if written < len(rows) or len(rows) < ABSORB_BATCH:
                break
        return moved

    def adopt_dead(self) -> int:
        """Adopt the spools of dead presences (and clear their leases, delete their files)."""
        try:
            names = os.listdir(self.spool_dir)
        except OSError:
            return 0
        own = presence.own_tokens()
        moved = 0
        tokens = {n[: -len(LOCK_SUFFIX)] for n in names if n.endswith(LOCK_SUFFIX)}
        spools = {n[: -len(SPOOL_SUFFIX)] for n in names if n.endswith(SPOOL_SUFFIX)}
        for token in sorted((tokens | spools) - own):
            fd = presence.adopt_lock(self.spool_dir, token) if token in tokens else None
            if token in tokens and fd is None:
                continue  # alive, or another process is adopting it right now
            try:
                if token in spools:
                    moved += self._adopt_spool(token)
                with self._db.write("adopt") as conn:
                    leases.clear_tokens(conn, [token])
                with contextlib.suppress(OSError):
                    os.unlink(presence.lock_path(self.spool_dir, token))
            except OutboxError as exc:
                self._log.error("adopt", "cannot adopt the spool of a dead process: %s", exc)
            finally:
                if fd is not None:
                    os.close(fd)
        for name in names:  # presences that died between creating and naming their lock
            tmp = name.startswith(".") and name.endswith(".tmp")
            if tmp and presence.unlocked(self.spool_dir / name):
                with contextlib.suppress(OSError):
                    os.unlink(self.spool_dir / name)
        return moved

    def _adopt_spool(self, token: str) -> int:
        path = spool_path(self.spool_dir, token)
        try:
            check_file(path, "spool file")  # never adopt (and send) what another user put here
        except NotOursError as exc:
            self._log.error("adopt-foreign", "%s", exc)
            return 0
        try:
            rows = read_spool(path)
        except OutboxError as exc:
            aside = move_aside(path, "unreadable", self._clock())
            logger.error(
                "spool %s of a dead process is unreadable (%s); moved it to %s", path, exc, aside
            )
            return 0
        written, inserted = self._write_prefix([(r.event_id, r.body, r.enqueued_at) for r in rows])
        if written < len(rows):
            raise OutboxError(f"only {written} of {len(rows)} rows of {path} fit; retried later")
        delete_spool_files(path)
        if rows:
            logger.info("moved %d event(s) from the spool of a process that is gone", len(rows))
        return inserted

    # --- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Move what is spooled into the outbox if possible; then let go of the presence."""
        with contextlib.suppress(OutboxError):
            self.absorb()
        if self._spool.count or self._overflow:
            self._spool.close(delete=False)
            self.presence.abandon()  # the spool stays: the next process adopts it
            if self._overflow:
                self.lost += len(self._overflow)
                logger.error(
                    "%d telemetry event(s) held in memory could not be written at close and "
                    "are lost",
                    len(self._overflow),
                )
            return
        self._spool.close(delete=True)
        self.presence.release()

    def release_at_exit(self) -> None:
        """At interpreter exit: with nothing spooled, remove the presence's files (a clean
        directory); with something left, keep them for the next process to adopt."""
        if self._spool.count or self._overflow:
            self.presence.abandon()
            return
        self._spool.close(delete=True)
        self.presence.release()

    def after_fork_in_child(self) -> None:
        """A new presence and spool: the parent's are the parent's."""
        self.presence.after_fork_in_child()
        self._spool.after_fork_in_child(spool_path(self.spool_dir, self.presence.token))
        self._overflow = collections.deque()
        self._overflow_lock = threading.Lock()
        self.spooled = self.lost = 0
