"""Reading the outbox's state: counts, counters, meta, rows and predictions.

Functions of a connection, shared by the writer (:class:`~.outbox.SqliteOutbox`) and the
read-only reader (:class:`~.reader.OutboxReader`), so each query exists once. The pending
count is O(1) (``highest id - removed_count``, see :mod:`.schema`), never ``COUNT(*)``.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any, Final

import attrs

from .schema import (
    COUNTER_NAMES,
    COUNTER_PREFIX,
    META_NOT_BEFORE,
    META_NOT_BEFORE_SECONDS,
    SQL_DEAD_COUNT,
    SQL_GET_DEAD,
    SQL_GET_EVENT,
    SQL_HIGHEST_ID,
    SQL_LEASED,
    SQL_LIST_DEAD,
    SQL_LIST_EVENTS,
    SQL_META,
    SQL_OLDEST,
    SQL_PENDING,
)

__all__ = [
    "ROW_STATES",
    "Ledger",
    "count_rows",
    "counters",
    "counters_of",
    "dead_count",
    "event_ids_starting_with",
    "get_meta",
    "get_pause",
    "get_row",
    "leased_count",
    "ledger",
    "list_rows",
    "load_predictions",
    "meta",
    "oldest_enqueued_at",
    "pending_count",
    "rows_as_dicts",
    "save_prediction",
    "set_meta",
    "set_pause",
]

#: The states :func:`list_rows` can select; "dead" reads the dead-letter table.
ROW_STATES: Final = ("pending", "leased", "dead")
#: A row under a lease that has not expired at ``:now`` (NULLs count as not leased).
_LIVE_LEASE: Final = "coalesce(lease_owner IS NOT NULL AND lease_expires_at > :now, 0)"
SQL_IDS_WITH_PREFIX: Final = (
    "SELECT event_id FROM events WHERE event_id GLOB :pattern UNION ALL"
    " SELECT event_id FROM dead WHERE event_id GLOB :pattern ORDER BY event_id LIMIT :limit"
)
SQL_COUNTERS: Final = (
    "SELECT substr(key, 9), value FROM meta WHERE key LIKE 'counter\\_%' ESCAPE '\\'"
)


def rows_as_dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """The cursor's rows as dicts keyed by column name."""
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def pending_count(conn: sqlite3.Connection) -> int:
    """Rows waiting for delivery, leased or not (O(1): highest id - removed_count)."""
    row = conn.execute(SQL_PENDING).fetchone()
    return int(row[0]) if row else 0


def leased_count(conn: sqlite3.Connection, now: float) -> int:
    """Rows under a lease that has not expired (by the partial index of leased rows)."""
    return int(conn.execute(SQL_LEASED, (now,)).fetchone()[0])


def dead_count(conn: sqlite3.Connection) -> int:
    """Rows in the dead-letter table."""
    return int(conn.execute(SQL_DEAD_COUNT).fetchone()[0])


def oldest_enqueued_at(conn: sqlite3.Connection) -> float | None:
    """When the oldest waiting row was tracked (epoch seconds), or None when there is none."""
    row = conn.execute(SQL_OLDEST).fetchone()
    return None if row is None else float(row[0])


def counters(conn: sqlite3.Connection) -> dict[str, int]:
    """The persisted counters (at least :data:`~.schema.COUNTER_NAMES`)."""
    result = dict.fromkeys(COUNTER_NAMES, 0)
    for name, value in conn.execute(SQL_COUNTERS).fetchall():
        try:
            result[str(name)] = int(value)
        except ValueError:
            continue
    return result


def counters_of(meta_values: dict[str, str]) -> dict[str, int]:
    """The counters among already-read meta values."""
    result = dict.fromkeys(COUNTER_NAMES, 0)
    for key, value in meta_values.items():
        if key.startswith(COUNTER_PREFIX):
            try:
                result[key[len(COUNTER_PREFIX) :]] = int(value)
            except ValueError:
                continue
    return result


def meta(conn: sqlite3.Connection) -> dict[str, str]:
    """The whole ``meta`` table."""
    return {str(k): str(v) for k, v in conn.execute(SQL_META)}


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    """One value of the ``meta`` table."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Set one value of the ``meta`` table."""
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def get_pause(conn: sqlite3.Connection) -> tuple[float, float | None]:
    """The shared pause: ``(not_before, seconds)``; ``(0.0, None)`` when none.

    ``seconds`` is the length the pause was set for, None in files of earlier builds (a plain
    epoch float only).
    """
    rows = dict(
        conn.execute(
            "SELECT key, value FROM meta WHERE key IN (?, ?)",
            (META_NOT_BEFORE, META_NOT_BEFORE_SECONDS),
        ).fetchall()
    )
    until = _number(rows.get(META_NOT_BEFORE)) or 0.0
    return until, _number(rows.get(META_NOT_BEFORE_SECONDS))


def set_pause(conn: sqlite3.Connection, until: float, seconds: float | None) -> None:
    """Set the shared pause to ``until``, set for ``seconds`` (None: unknown)."""
    set_meta(conn, META_NOT_BEFORE, repr(float(until)))
    if seconds is None:
        conn.execute("DELETE FROM meta WHERE key = ?", (META_NOT_BEFORE_SECONDS,))
    else:
        set_meta(conn, META_NOT_BEFORE_SECONDS, repr(float(seconds)))


def list_rows(
    conn: sqlite3.Connection,
    *,
    dead: bool = False,
    limit: int | None = None,
    offset: int = 0,
    since: float | None = None,
    in_state: str | None = None,
    now: float = 0.0,
) -> list[dict[str, Any]]:
    """Rows of ``events`` (or ``dead``) oldest first, as dicts keyed by column name.

    ``in_state`` ("pending", "leased" at ``now``, or "dead") and ``since`` (tracked, or for
    dead rows dead-lettered, at or after that epoch second) narrow the selection.
    """
    if offset == 0 and since is None and in_state is None:
        sql = SQL_LIST_DEAD if dead else SQL_LIST_EVENTS
        return rows_as_dicts(conn.execute(sql, (-1 if limit is None else limit,)))
    table, where, params = _selection(dead=dead, since=since, in_state=in_state, now=now)
    sql = f"SELECT * FROM {table} WHERE {where} ORDER BY id LIMIT :limit OFFSET :offset"  # noqa: S608
    params.update(limit=-1 if limit is None else limit, offset=offset)
    return rows_as_dicts(conn.execute(sql, params))


def count_rows(
    conn: sqlite3.Connection,
    *,
    dead: bool,
    since: float | None = None,
    in_state: str | None = None,
    now: float = 0.0,
) -> int:
    """How many rows :func:`list_rows` selects with the same arguments (a scan: ``COUNT(*)``)."""
    table, where, params = _selection(dead=dead, since=since, in_state=in_state, now=now)
    sql = f"SELECT COUNT(*) FROM {table} WHERE {where}"  # noqa: S608
    return int(conn.execute(sql, params).fetchone()[0])


def _selection(
    *, dead: bool, since: float | None, in_state: str | None, now: float
) -> tuple[str, str, dict[str, Any]]:
    """The table, WHERE clause (constant fragments only) and parameters of a row selection."""
    if in_state is not None and in_state not in ROW_STATES:
        raise ValueError(f"in_state must be one of {', '.join(ROW_STATES)}, not {in_state!r}")
    dead = dead or in_state == "dead"
    clauses = []
    params: dict[str, Any] = {"now": now}
    if since is not None:
        clauses.append(f"{'dead_at' if dead else 'enqueued_at'} >= :since")
        params["since"] = since
    if not dead and in_state == "leased":
        clauses.append(_LIVE_LEASE)
    elif not dead and in_state == "pending":
        clauses.append(f"NOT {_LIVE_LEASE}")
    return ("dead" if dead else "events"), " AND ".join(clauses) or "1", params


def event_ids_starting_with(conn: sqlite3.Connection, prefix: str, *, limit: int = 10) -> list[str]:
    """Event ids of ``events`` and ``dead`` that start with ``prefix`` (sorted, at most limit).

    GLOB (case-sensitive, glob characters escaped) so that the UNIQUE index on event_id
    serves the lookup instead of a scan.
    """
    pattern = re.sub(r"([*?\[])", r"[\1]", prefix) + "*"
    rows = conn.execute(SQL_IDS_WITH_PREFIX, {"pattern": pattern, "limit": limit})
    return [str(r[0]) for r in rows]


def get_row(conn: sqlite3.Connection, event_id: str) -> tuple[str, dict[str, Any]] | None:
    """``("events" | "dead", row)`` for one event id, or None."""
    for table, sql in (("events", SQL_GET_EVENT), ("dead", SQL_GET_DEAD)):
        rows = rows_as_dicts(conn.execute(sql, (event_id,)))
        if rows:
            return table, rows[0]
    return None


def save_prediction(conn: sqlite3.Connection, key: str, body: str, fetched_at: float) -> None:
    """Store one prediction reply (JSON text) under its query key."""
    conn.execute(
        "INSERT OR REPLACE INTO predictions (key, body, fetched_at) VALUES (?, ?, ?)",
        (key, body, fetched_at),
    )


def load_predictions(conn: sqlite3.Connection) -> list[tuple[str, str, float]]:
    """Every stored prediction as ``(key, body, fetched_at)``."""
    rows = conn.execute("SELECT key, body, fetched_at FROM predictions ORDER BY key")
    return [(str(k), str(b), float(f)) for k, b, f in rows.fetchall()]


@attrs.frozen(kw_only=True)
class Ledger:
    """Where every event ever written to one outbox file went; persisted, so it holds across
    processes and restarts.

    ``tracked`` counts rows ever inserted into ``events`` (by ``track()``, from a spool, or
    moved from a lost file), a requeued dead letter not counted twice. Each one has exactly
    one outcome: ``tracked == delivered + duplicates + dead + evicted + purged + pending +
    dry_run`` (:attr:`balanced`). ``dead`` is what the dead table holds now (a requeued row
    left it, an evicted or purged dead row is counted there instead).
    """

    tracked: int
    delivered: int
    duplicates: int
    dead: int
    evicted: int
    purged: int
    pending: int
    dry_run: int

    @property
    def balanced(self) -> bool:
        """Whether the outcomes add up to what was tracked."""
        outcomes = (
            self.delivered
            + self.duplicates
            + self.dead
            + self.evicted
            + self.purged
            + self.pending
            + self.dry_run
        )
        return self.tracked == outcomes

    def to_dict(self) -> dict[str, int]:
        """The figures as a JSON-ready dict."""
        return attrs.asdict(self)


SQL_HIGHEST: Final = f"SELECT {SQL_HIGHEST_ID}"


def ledger(conn: sqlite3.Connection, values: dict[str, int] | None = None) -> Ledger:
    """The file's :class:`Ledger`, from one read (pass ``counters`` already read, if any)."""
    values = counters(conn) if values is None else values
    highest = int(conn.execute(SQL_HIGHEST).fetchone()[0])
    return Ledger(
        tracked=highest - values.get("requeued", 0),
        delivered=values.get("delivered", 0),
        duplicates=values.get("duplicates", 0),
        dead=dead_count(conn),
        evicted=values.get("evicted", 0),
        purged=values.get("purged", 0),
        pending=pending_count(conn),
        dry_run=values.get("dry_run", 0),
    )
