"""SQLite errors mapped to the SDK's own: callers of the store never see ``sqlite3.*``.

:class:`~mosaic_telemetry._exceptions.OutboxBusyError` for a lock held by another writer,
:class:`~mosaic_telemetry._exceptions.OutboxError` for everything else; a file that is not a
healthy database at open time is :class:`CorruptFileError` (internal: the outbox moves it aside).
"""

from __future__ import annotations

import sqlite3
from typing import Final

from .._exceptions import OutboxBusyError, OutboxError

__all__ = ["CorruptFileError", "is_busy", "is_corrupt", "map_error"]

# Extended result codes carry the primary code in their low byte.
_BUSY_CODES: Final = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
_CORRUPT_CODES: Final = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB


class CorruptFileError(Exception):
    """Internal: the file at open time is not a healthy SQLite database."""


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return code & 0xFF if isinstance(code, int) else None


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` means another connection holds a lock (SQLITE_BUSY / SQLITE_LOCKED)."""
    code = _code(exc)
    if code is not None:
        return code in _BUSY_CODES
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def is_corrupt(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` means the file is not a (healthy) SQLite database."""
    code = _code(exc)
    if code is not None:
        return code in _CORRUPT_CODES
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text


def map_error(exc: sqlite3.Error, op: str, path: object) -> OutboxError:
    """The SDK's exception for ``exc`` raised by operation ``op`` on the outbox at ``path``."""
    if is_busy(exc):
        return OutboxBusyError(f"{op}: outbox {path} is locked by another writer ({exc})")
    return OutboxError(f"{op} failed on outbox {path}: {exc}")
