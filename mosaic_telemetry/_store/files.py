"""The outbox's place on disk: preparing the location, file identity, moving a file aside.

SQLite keeps a ``-wal`` and a ``-shm`` (and, outside WAL mode, a ``-journal``) next to the
database; :func:`side_files` names them. A new directory is 0700 and a new file 0600 (SQLite
gives its side files the mode of the database).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import time
from typing import Final

from .._exceptions import OutboxError

__all__ = [
    "SIDE_SUFFIXES",
    "file_size",
    "identity",
    "move_aside",
    "prepare_location",
    "prepare_spool_dir",
    "remove_side_files",
    "side_files",
    "spool_dir_of",
]

SIDE_SUFFIXES: Final = ("-wal", "-shm", "-journal")


def spool_dir_of(path: pathlib.Path) -> pathlib.Path:
    """The directory of an outbox's presence locks and spools: ``<outbox>.spool``."""
    return path.with_name(f"{path.name}.spool")


def side_files(path: pathlib.Path) -> dict[str, pathlib.Path]:
    """The ``-wal``, ``-shm`` and ``-journal`` files SQLite keeps next to ``path``."""
    return {suffix: pathlib.Path(f"{path}{suffix}") for suffix in SIDE_SUFFIXES}


def file_size(path: pathlib.Path) -> int | None:
    """Size in bytes, or None when there is no such file."""
    try:
        return path.stat().st_size
    except OSError:
        return None


def identity(path: pathlib.Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, or None when it does not exist."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def prepare_location(path: pathlib.Path) -> None:
    """Create the directory (0700) and an empty file (0600) if missing; OutboxError if not."""
    if not path.parent.is_dir():
        try:
            os.makedirs(path.parent, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise OutboxError(
                f"cannot create the directory {path.parent} for outbox {path}: "
                f"{exc.strerror or exc}"
            ) from exc
    try:
        if path.is_dir():
            raise OutboxError(f"outbox path {path} is a directory, not a file")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise OutboxError(f"cannot write outbox {path}: its directory is not writable")
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        os.close(os.open(path, flags, 0o600))  # SQLite gives -wal/-shm the same mode
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutboxError(f"cannot create or open outbox file {path}: {reason}") from exc


def prepare_spool_dir(spool_dir: pathlib.Path) -> None:
    """Create the spool directory (0700), and the outbox's directory (0700) if it is gone."""
    if not spool_dir.parent.is_dir():
        os.makedirs(spool_dir.parent, mode=0o700, exist_ok=True)  # as prepare_location does
    with contextlib.suppress(FileExistsError):
        os.mkdir(spool_dir, 0o700)


def remove_side_files(path: pathlib.Path) -> None:
    """Delete a ``-wal`` and ``-shm`` left next to ``path`` (they belong to an older file)."""
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def move_aside(path: pathlib.Path, label: str, now: float) -> pathlib.Path:
    """Rename ``path`` (and its side files) to ``<name>.<label>-<UTC time>[-n]``; the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    base = f"{path.name}.{label}-{stamp}"
    aside = path.with_name(base)
    for n in itertools.count(1):
        if not aside.exists():
            break
        aside = path.with_name(f"{base}-{n}")
    try:
        os.replace(path, aside)
        for suffix in ("-wal", "-shm"):
            side = pathlib.Path(f"{path}{suffix}")
            if side.exists():
                os.replace(side, f"{aside}{suffix}")
    except OSError as exc:
        raise OutboxError(f"outbox {path} could not be moved aside: {exc}") from exc
    return aside
