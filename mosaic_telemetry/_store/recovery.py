"""Noticing that the outbox file was lost under us, and clearing the way for its successor.

Lost means: the main file was deleted or replaced (another inode at the path), or, while this
process holds connections, its ``-wal`` or ``-shm`` was (``rm`` of the side files, a restore
from a backup). Either way the connections of this process still read the old file, so
:meth:`~.database.FileDatabase.ensure_file` copies every row out through them and builds a
new file at the path. Before that, :func:`clear_the_way` makes sure nothing old is applied to
anything new:

- side files left at the path belong to the lost file (or to nobody we know): they are moved
  aside as ``<name>-wal.stale-<time>``, never applied to a new file (SQLite would replay an old
  ``-wal`` into whatever database now has the name);
- a main file we still own but whose side files were lost is moved aside as ``.stale-<time>``
  (its rows are in the copy);
- a file moved over ours that is not an outbox of our schema and mode (another application's
  database, garbage) is moved aside as ``.foreign-<time>`` / ``.corrupt-<time>``, never written;
- an outbox of ours moved over it (a restored backup) is kept, and the rows are merged into it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
from typing import Final

import attrs

from .._exceptions import OutboxError
from .._log import logger
from .errors import is_corrupt
from .files import identity, move_aside
from .schema import check_outbox

__all__ = ["Identities", "clear_the_way", "lost_because", "snapshot"]

SIDES: Final = ("-wal", "-shm")


@attrs.frozen
class Identities:
    """(device, inode) of the outbox's files as this process's connections know them."""

    main: tuple[int, int] | None
    wal: tuple[int, int] | None
    shm: tuple[int, int] | None
    generation: int  # of the connection registry: a fork or a recreate starts a new one


def snapshot(path: pathlib.Path, main: tuple[int, int] | None, generation: int) -> Identities:
    """The identities now (the main file's as given: the one our connections opened)."""
    return Identities(
        main=main,
        wal=identity(pathlib.Path(f"{path}-wal")),
        shm=identity(pathlib.Path(f"{path}-shm")),
        generation=generation,
    )


def lost_because(path: pathlib.Path, known: Identities, generation: int) -> str | None:
    """Why the file our connections use is not the one at ``path`` any more, or None."""
    current = identity(path)
    if current != known.main:
        return "deleted" if current is None else "replaced"
    if generation != known.generation:
        return None  # our connections were all closed (a fork): side files may be new
    for suffix, was in (("-wal", known.wal), ("-shm", known.shm)):
        if was is None:
            continue
        now = identity(pathlib.Path(f"{path}{suffix}"))
        if now != was:
            return f"its {suffix} was {'deleted' if now is None else 'replaced'}"
    return None


def _move_sides_aside(path: pathlib.Path, now: float) -> None:
    for suffix in SIDES:
        side = pathlib.Path(f"{path}{suffix}")
        if os.path.lexists(side):
            aside = move_aside(side, "stale", now)
            logger.warning("moved %s aside to %s: it belongs to a lost file", side, aside)


def _is_our_outbox(path: pathlib.Path, mode: str) -> str | None:
    """None when ``path`` is an outbox of our schema and mode; else why not ("foreign" or
    "corrupt"). Read immutably: nothing is created or replayed."""
    try:
        conn = sqlite3.connect(path.as_uri() + "?mode=ro&immutable=1", uri=True)
    except sqlite3.Error:
        return "corrupt"
    try:
        return None if check_outbox(conn, path, mode=mode) else "foreign"
    except OutboxError:
        return "foreign"
    except sqlite3.Error as exc:
        return "corrupt" if is_corrupt(exc) else "foreign"
    finally:
        conn.close()


def clear_the_way(path: pathlib.Path, reason: str, mode: str, now: float) -> bool:
    """Prepare ``path`` for the lost file's successor; True when it will be a new, empty file,
    False when an outbox of ours is there already (the rows are merged into it)."""
    current = identity(path)
    if current is None:  # deleted: what is left beside it is the old file's
        for suffix in SIDES:
            with contextlib.suppress(OSError):  # gone too, or its directory is (a file now)
                os.unlink(f"{path}{suffix}")
        return True
    _move_sides_aside(path, now)
    if reason != "replaced":  # still our file, but its side files are gone: stale
        aside = move_aside(path, "stale", now)
        logger.warning("moved %s aside to %s: its side files were lost", path, aside)
        return True
    why = _is_our_outbox(path, mode)
    if why is None:
        return False
    aside = move_aside(path, why, now)
    logger.error(
        "a file that is not this outbox was put at %s; moved it aside to %s, untouched", path, aside
    )
    return True
