"""A read-only reader of an outbox file, for ``mosaic-telemetry`` and for people debugging.

:class:`OutboxReader` never creates, moves or writes the file: every read opens its own
``mode=ro`` connection (``sqlite3.connect("file:...?mode=ro", uri=True)``), checks that the
file is a mosaic_telemetry outbox of :data:`~.schema.SCHEMA_VERSION` (the same check the writer
runs, :func:`~.schema.check_outbox`), runs its queries in one read transaction and closes. A
missing file, a file that is not SQLite (or is corrupt), an SQLite file of another application
and an outbox of another schema version each raise :class:`~.._exceptions.OutboxError` with a
message naming the file and the problem.

It reads safely while an agent writes the same file: the outbox runs in WAL mode, so a
reader sees the last committed state and never blocks a writer (nor is it blocked by one).
Its queries are the writer's (:mod:`.state`); ``status`` counts pending rows in O(1).
Spools (:mod:`.spool`) are read the same way, each with its owner's liveness from its presence
lock (a ``flock`` probe takes and drops a lock; it never writes a byte).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs

from .._exceptions import OutboxBusyError, OutboxError
from . import presence, state
from .errors import is_busy, is_corrupt
from .files import file_size, side_files, spool_dir_of
from .schema import META_LAST_ERROR, check_outbox
from .spool import SPOOL_SUFFIX, SQL_TAKE
from .state import ROW_STATES

__all__ = ["ROW_STATES", "OutboxReader", "OutboxStatus", "SpoolStatus"]

T = TypeVar("T")

#: How long a read waits for a lock (only a WAL recovery or a checkpoint-truncate holds one).
_BUSY_TIMEOUT_SECONDS: Final = 5.0


@attrs.frozen(kw_only=True)
class SpoolStatus:
    """One spool file next to the outbox: whose, how many events, and whether its owner lives."""

    token: str
    path: str
    events: int
    owner: str  # "alive", "dead" (the next process that opens the outbox adopts it), "unknown"
    oldest_age_seconds: float | None


@attrs.frozen(kw_only=True)
class OutboxStatus:
    """What ``mosaic-telemetry status`` shows: one consistent snapshot of an outbox file."""

    path: str
    size_bytes: int
    wal_bytes: int | None  # None: no -wal file
    schema_version: str
    mode: str | None  # "real" or "dry_run"
    server_url: str | None
    created_at: float | None
    pending: int  # rows in events, leased or not
    leased: int  # rows under a lease that has not expired: being sent right now
    dead: int
    oldest_pending_age_seconds: float | None
    not_before: float | None  # set only while a Retry-After pause is still running
    counters: dict[str, int]
    last_error: str | None
    last_error_at: float | None
    #: Events in spool files, not yet moved into the outbox; ``spools`` lists each file.
    spooled: int = 0
    spools: list[SpoolStatus] = attrs.Factory(list)
    #: Where every event written to the file went (see ``_store.state.Ledger``).
    ledger: dict[str, int] = attrs.Factory(dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape of ``status --json``)."""
        return attrs.asdict(self)


def _float(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


class OutboxReader:
    """Reads one outbox file without ever modifying it; every method raises OutboxError."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time):
        self.path = Path(os.fspath(path)).expanduser().absolute()
        self._clock = clock

    def __repr__(self) -> str:
        return f"OutboxReader({str(self.path)!r})"

    # --- opening ------------------------------------------------------------------------------
    def _check_file(self) -> None:
        path = self.path
        if not path.exists():
            raise OutboxError(f"no outbox file at {path}")
        if path.is_dir():
            raise OutboxError(f"outbox path {path} is a directory, not a file")
        if not os.access(path, os.R_OK):
            raise OutboxError(f"cannot read outbox {path}: permission denied")

    def _quiet(self) -> bool:
        """No -wal, -shm or -journal file: the whole database is in the main file."""
        return not any(p.exists() for p in side_files(self.path).values())

    def _connect(self, *, immutable: bool) -> sqlite3.Connection:
        # mode=ro never creates the file. On a WAL database it still creates (and leaves
        # behind) empty -wal/-shm files when none exist, so when the file is quiet we read it
        # as immutable instead (no locks, no side files) and check afterwards that no writer
        # started meanwhile. Reproduce: open a closed outbox with mode=ro, list the directory.
        uri = self.path.as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")
        return sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None)

    def _validate(self, conn: sqlite3.Connection) -> None:
        """Raise OutboxError unless this is a mosaic_telemetry outbox of our schema version."""
        if not check_outbox(conn, self.path, complete=True):
            raise OutboxError(f"{self.path} is empty: not a mosaic_telemetry outbox")

    def _attempt(self, read: Callable[[sqlite3.Connection], T], *, immutable: bool) -> T:
        try:
            conn = self._connect(immutable=immutable)
        except sqlite3.Error as exc:
            raise self._mapped(exc) from exc
        try:
            conn.execute("BEGIN")  # one snapshot for every query of this read
            self._validate(conn)
            return read(conn)
        except sqlite3.Error as exc:
            raise self._mapped(exc) from exc
        finally:
            conn.close()  # rolls the read transaction back

    def _mapped(self, exc: sqlite3.Error) -> OutboxError:
        path = self.path
        if is_busy(exc):
            return OutboxBusyError(f"outbox {path} stayed locked by another process ({exc})")
        if is_corrupt(exc):
            return OutboxError(f"{path} is not a readable outbox: corrupt or not SQLite ({exc})")
        return OutboxError(f"cannot read outbox {path}: {exc}")

    def read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``read`` on a validated read-only connection, in one read transaction."""
        self._check_file()
        if self._quiet():
            try:
                result = self._attempt(read, immutable=True)
            except OutboxError:
                if self._quiet():
                    raise
            else:
                if self._quiet():
                    return result
            # A writer opened the file while we read it unlocked: read again under WAL locks.
        return self._attempt(read, immutable=False)

    # --- what the commands show ---------------------------------------------------------------
    def status(self) -> OutboxStatus:
        """Counts, ages, sizes and identity of the outbox, from one snapshot (O(1) pending),
        plus its spool files and its ledger."""
        now = self._clock()
        spools = self.spools()

        def read(conn: sqlite3.Connection) -> OutboxStatus:
            meta = state.meta(conn)
            counters = state.counters_of(meta)
            oldest = state.oldest_enqueued_at(conn)
            not_before = _float(meta.get("not_before"))
            last_error, last_error_at = _last_error(meta.get(META_LAST_ERROR))
            return OutboxStatus(
                path=str(self.path),
                size_bytes=file_size(self.path) or 0,
                wal_bytes=file_size(side_files(self.path)["-wal"]),
                schema_version=meta.get("schema_version", ""),
                mode=meta.get("mode"),
                server_url=meta.get("server_url"),
                created_at=_float(meta.get("created_at")),
                pending=state.pending_count(conn),
                leased=state.leased_count(conn, now),
                dead=state.dead_count(conn),
                oldest_pending_age_seconds=None if oldest is None else max(0.0, now - oldest),
                not_before=not_before if not_before and not_before > now else None,
                counters=counters,
                last_error=last_error,
                last_error_at=last_error_at,
                spooled=sum(s.events for s in spools),
                spools=spools,
                ledger=state.ledger(conn, counters).to_dict(),
            )

        return self.read(read)

    # --- spools ---------------------------------------------------------------------------------
    def _spool_files(self) -> list[Path]:
        try:
            names = os.listdir(spool_dir_of(self.path))
        except OSError:
            return []
        return [spool_dir_of(self.path) / n for n in sorted(names) if n.endswith(SPOOL_SUFFIX)]

    def spools(self) -> list[SpoolStatus]:
        """Every spool file beside the outbox, with its events and its owner's liveness."""
        now = self._clock()
        result = []
        for path in self._spool_files():
            token = path.name[: -len(SPOOL_SUFFIX)]
            try:
                rows = _spooled_rows(path, limit=-1)
            except OutboxError:
                rows = []
            alive = presence.probe(path.parent, token)
            result.append(
                SpoolStatus(
                    token=token,
                    path=str(path),
                    events=len(rows),
                    owner={True: "alive", False: "dead", None: "unknown"}[alive],
                    oldest_age_seconds=max(0.0, now - rows[0][3]) if rows else None,
                )
            )
        return result

    def list_spooled(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Events still in spool files, oldest spool first, with ``state`` "spooled"."""
        rows: list[dict[str, Any]] = []
        for path in self._spool_files():
            left = -1 if limit is None else limit - len(rows)
            if left == 0:
                break
            with contextlib.suppress(OutboxError):
                for row_id, event_id, body, enqueued_at in _spooled_rows(path, limit=left):
                    rows.append(
                        {
                            "id": row_id,
                            "event_id": event_id,
                            "body": body,
                            "enqueued_at": enqueued_at,
                            "spool": path.name[: -len(SPOOL_SUFFIX)],
                            "state": "spooled",
                        }
                    )
        return rows

    def meta(self) -> dict[str, str]:
        """The whole ``meta`` table."""
        return self.read(state.meta)

    def list_rows(
        self,
        *,
        dead: bool = False,
        limit: int | None = None,
        offset: int = 0,
        since: float | None = None,
        in_state: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of ``events`` (or ``dead``) oldest first, keyed by column, with ``state``.

        ``state`` is "pending", "leased" (a live lease: being sent now) or "dead";
        ``in_state`` selects the rows in that state only ("dead" is ``dead=True``). ``since``
        keeps the rows tracked (dead: dead-lettered) at or after that epoch second; ``offset``
        skips the first rows.
        """
        now = self._clock()
        now = self._clock()
        rows = self.read(
            lambda conn: state.list_rows(
                conn,
                dead=dead,
                limit=limit,
                offset=offset,
                since=since,
                in_state=in_state,
                now=now,
            )
        )
        return [{**row, "state": _state(row, now, dead=dead or in_state == "dead")} for row in rows]

    def event_ids_starting_with(self, prefix: str, *, limit: int = 10) -> list[str]:
        """Event ids, pending or dead, that start with ``prefix`` (at most ``limit``, sorted)."""
        return self.read(lambda conn: state.event_ids_starting_with(conn, prefix, limit=limit))

    def get_row(self, event_id: str) -> dict[str, Any] | None:
        """One event by id, pending or dead (``state`` as in :meth:`list_rows`), or None."""
        now = self._clock()
        found = self.read(lambda conn: state.get_row(conn, event_id))
        if found is None:
            return None
        table, row = found
        return {**row, "state": _state(row, now, dead=table == "dead")}

    def dead_event_ids(self, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` are in the dead-letter table."""
        wanted = json.dumps(list(event_ids))
        return self.read(
            lambda conn: {
                str(r[0])
                for r in conn.execute(
                    "SELECT event_id FROM dead WHERE event_id IN (SELECT value FROM json_each(?))",
                    (wanted,),
                )
            }
        )

    def count(self, *, dead: bool, since: float | None = None, in_state: str | None = None) -> int:
        """Rows in ``dead`` (or ``events``: O(1), the pending count); with ``since`` or
        ``in_state``, the rows :meth:`list_rows` selects with them."""
        if since is None and in_state is None:
            return self.read(state.dead_count if dead else state.pending_count)
        now = self._clock()
        return self.read(
            lambda conn: state.count_rows(conn, dead=dead, since=since, in_state=in_state, now=now)
        )

    def quick_check(self) -> list[str]:
        """``PRAGMA quick_check`` (read-only): ``["ok"]`` for a healthy file, else the problems."""
        return self.read(
            lambda conn: [str(r[0]) for r in conn.execute("PRAGMA quick_check(20)").fetchall()]
        )


def _spooled_rows(path: Path, *, limit: int) -> list[tuple[int, str, str, float]]:
    """A spool's rows, read only (immutable when it has no -wal: nothing is created)."""
    quiet = not any(Path(f"{path}{s}").exists() for s in ("-wal", "-shm"))
    uri = path.as_uri() + ("?mode=ro&immutable=1" if quiet else "?mode=ro")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None)
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot read spool {path}: {exc}") from exc
    try:
        return [
            (int(a), str(b), str(c), float(d)) for a, b, c, d in conn.execute(SQL_TAKE, (limit,))
        ]
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot read spool {path}: {exc}") from exc
    finally:
        conn.close()


def _state(row: dict[str, Any], now: float, *, dead: bool) -> str:
    if dead:
        return "dead"
    expires = row.get("lease_expires_at")
    if row.get("lease_owner") is not None and expires is not None and float(expires) > now:
        return "leased"
    return "pending"


def _last_error(raw: str | None) -> tuple[str | None, float | None]:
    """The ``last_error`` meta value (JSON ``{"at", "error"}``); plain text is shown as is."""
    if raw is None:
        return None, None
    try:
        value = json.loads(raw)
    except ValueError:
        return raw, None
    if not isinstance(value, dict):
        return raw, None
    at = value.get("at")
    error = value.get("error")
    return (
        str(error) if error is not None else None,
        float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None,
    )
