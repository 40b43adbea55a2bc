"""The durable store: the SQLite outbox every tracked event is written to before ``track()``.

Modules, one concept each (imports run down this list, never up):

- :mod:`.schema`: the file format (tables, meta keys), pragmas, DDL, migrations, shared SQL
  and the one validation of an existing file;
- :mod:`.errors`: ``sqlite3`` errors mapped to ``OutboxError`` / ``OutboxBusyError``;
- :mod:`.files`: the location on disk, file identity, moving a corrupt file aside;
- :mod:`.connections`: the per-(thread, pid) connection registry, fork hooks, ``transaction()``;
- :mod:`.leases`: ``LeaseOwner``, ``ClaimedRow``, pid liveness and the lease SQL;
- :mod:`.queue`, :mod:`.state`, :mod:`.repair`: the operations, as functions of a connection;
- :mod:`.database` / :mod:`.memory`: one outbox file, or the in-memory fallback database;
- :mod:`.outbox`: ``SqliteOutbox``, thin methods over the modules above;
- :mod:`.reader`: ``OutboxReader``, the read-only view for ``mosaic-telemetry``.
"""

from __future__ import annotations

from .leases import ClaimedRow, LeaseOwner, pid_is_alive
from .outbox import SqliteOutbox
from .reader import OutboxReader, OutboxStatus, SpoolStatus
from .schema import COUNTER_NAMES, MAX_ROW_DELAY_SECONDS, META_LAST_ERROR, SCHEMA_VERSION, TABLES
from .state import Ledger

__all__ = [
    "COUNTER_NAMES",
    "MAX_ROW_DELAY_SECONDS",
    "META_LAST_ERROR",
    "SCHEMA_VERSION",
    "TABLES",
    "ClaimedRow",
    "LeaseOwner",
    "Ledger",
    "OutboxReader",
    "OutboxStatus",
    "SpoolStatus",
    "SqliteOutbox",
    "pid_is_alive",
]
