"""Opening an outbox file: create it if needed, check it read-only, set it up, migrate it.

A file that is refused (another application's database, another schema version or mode) is
never modified: every check runs before the first pragma that could write. A file that is not
a healthy SQLite database (garbage, failed ``quick_check``) is moved aside once to
``<name>.corrupt-<time>`` and an empty outbox is started, with one error line.
"""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import Callable, Mapping

from .._exceptions import OutboxError
from .._log import logger
from . import files
from .connections import close_quietly, connect, transaction
from .errors import CorruptFileError, is_corrupt, map_error
from .schema import MAIN_WAL_AUTOCHECKPOINT, apply_pragmas, check_outbox, create_schema

__all__ = ["open_outbox"]


def open_outbox(
    path: pathlib.Path,
    *,
    busy_timeout_ms: int,
    synchronous: str,
    defaults: Mapping[str, str],
    clock: Callable[[], float],
) -> tuple[sqlite3.Connection, str]:
    """A set-up connection to the outbox at ``path`` and the server_url it was made for."""
    files.prepare_directory(path)
    with files.creation_lock(path, busy_timeout_ms / 1000):
        files.prepare_file(path, clock())
        try:
            return _initialise(path, busy_timeout_ms, synchronous, defaults)
        except CorruptFileError as exc:
            try:
                aside = files.move_aside(path, "corrupt", clock())
            except OutboxError as move_exc:
                raise OutboxError(f"outbox {path} is corrupt: {move_exc}") from exc
            logger.error(
                "outbox %s is corrupt (%s); moved it aside to %s and started an empty outbox",
                path,
                exc,
                aside,
            )
        files.prepare_file(path, clock())
        try:
            return _initialise(path, busy_timeout_ms, synchronous, defaults)
        except CorruptFileError as exc:
            raise OutboxError(f"outbox {path} is still corrupt after recreating: {exc}") from exc


def _initialise(
    path: pathlib.Path, busy_timeout_ms: int, synchronous: str, defaults: Mapping[str, str]
) -> tuple[sqlite3.Connection, str]:
    conn: sqlite3.Connection | None = None
    try:
        conn = connect(path, busy_timeout_ms=busy_timeout_ms, create=True)
        # Read-only checks first: a refused file is never modified.
        if check_outbox(conn, path, mode=defaults["mode"]):
            check = conn.execute("PRAGMA quick_check(1)").fetchone()
            if check is None or check[0] != "ok":
                raise CorruptFileError(f"quick_check: {check[0] if check else 'no answer'}")
        apply_pragmas(
            conn,
            busy_timeout_ms=busy_timeout_ms,
            synchronous=synchronous,
            wal_autocheckpoint=MAIN_WAL_AUTOCHECKPOINT,
        )
        with transaction(conn):
            server_url = create_schema(conn, path, defaults)
    except BaseException as exc:
        if conn is not None:
            close_quietly([conn])
        if isinstance(exc, sqlite3.Error):
            if is_corrupt(exc):
                raise CorruptFileError(str(exc)) from exc
            raise map_error(exc, "opening", path) from exc
        raise
    return conn, server_url
