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

    def sides(self, path: pathlib.Path) -> list[tuple[pathlib.Path, tuple[int, int] | None]]:
        """Each side file's path beside ``path`` and the identity our connections knew."""
        return [(pathlib.Path(f"{path}-wal"), self.wal), (pathlib.Path(f"{path}-shm"), self.shm)]


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
    for side, was in known.sides(path):
        if was is None:
            continue
        now = identity(side)
        if now != was:
            suffix = side.name[len(path.name) :]
            return f"its {suffix} was {'deleted' if now is None else 'replaced'}"
    return None


def _own_sides(path: pathlib.Path, known: Identities) -> list[pathlib.Path]:
    """The side files at ``path`` that are the lost file's own (the inodes our connections
    use); any other belongs to the file now at ``path``, or is being made with it."""
    return [side for side, was in known.sides(path) if was is not None and identity(side) == was]


def _move_sides_aside(path: pathlib.Path, known: Identities, now: float) -> None:
    """Move aside the lost file's own side files; others belong to the file now at ``path``."""
    for side in _own_sides(path, known):
        aside = move_aside(side, "stale", now)
        logger.warning("moved %s aside to %s: it belongs to a lost file", side, aside)


def _is_our_outbox(path: pathlib.Path, mode: str) -> str | None:
    """None when ``path`` is an outbox of our schema and mode; else why not ("foreign" or
    "corrupt"). Read only; never with a side file of ours beside it (moved aside first).

    With side files beside it (they are its own, then: another process's new outbox keeps its
    first rows, even its tables, in its -wal) it is read through them; without, immutably, so
    nothing is created or replayed."""
    immutable = not any(os.path.lexists(f"{path}{suffix}") for suffix in SIDES)
    uri = path.as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=1.0)
    except sqlite3.Error:
        return "corrupt"
    try:
        return None if check_outbox(conn, path, mode=mode) else "foreign"
    except OutboxError:
        return "foreign"
    except sqlite3.Error as exc:
        if is_corrupt(exc):
            return "corrupt"
        # Locked, or not openable read-only just now (another process is setting it up):
        # no verdict. The recreate is tried again next cycle, the rows kept meanwhile.
        raise OutboxError(f"cannot tell what the file now at {path} is yet: {exc}") from exc
    finally:
        conn.close()


def clear_the_way(
    path: pathlib.Path, reason: str, mode: str, now: float, known: Identities
) -> bool:
    """Prepare ``path`` for the lost file's successor; True when it will be a new, empty file,
    False when an outbox of ours is there already (the rows are merged into it).

    Only what belonged to the lost file (``known``: its identities) is moved aside or deleted.
    Several processes notice a loss at once: one of them may have made the successor already,
    which is then an outbox like any other, never "foreign", and its side files are its own.
    """
    current = identity(path)
    if current is None:  # deleted: what is left beside it and ours is the old file's
        for side in _own_sides(path, known):
            with contextlib.suppress(OSError):  # gone too, or its directory is (a file now)
                os.unlink(side)
        return True
    _move_sides_aside(path, known, now)
    if current == known.main:  # still our file, but its side files are gone: stale
        aside = move_aside(path, "stale", now)
        logger.warning("moved %s aside to %s: its side files were lost (%s)", path, aside, reason)
        return True
    why = _is_our_outbox(path, mode)
    if why is None:
        return False
    aside = move_aside(path, why, now)
    logger.error(
        "a file that is not this outbox was put at %s; moved it aside to %s, untouched", path, aside
    )
    return True
