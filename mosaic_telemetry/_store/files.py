"""The outbox's place on disk: preparing the location, file identity, moving a file aside.

SQLite keeps a ``-wal`` and a ``-shm`` (and, outside WAL mode, a ``-journal``) next to the
database; :func:`side_files` names them. A new directory is 0700 and a new file 0600 (SQLite
gives its side files the mode of the database).

Files we don't own are refused, never used (:class:`NotOursError`): the outbox's directory,
file, side files and spool directory must belong to the current user and not be writable by
group or others, and the files must not be symbolic links (``O_NOFOLLOW``). Otherwise another
user could read the events, or plant one that is sent with our API key. Nothing here ever
changes the mode or owner of an existing file.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import stat
import threading
import time
from collections.abc import Iterator
from typing import Final

from .._exceptions import OutboxError
from .._log import logger
from .waiting import Patience

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no creation lock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SIDE_SUFFIXES",
    "NotOursError",
    "check_dir",
    "check_file",
    "creation_lock",
    "file_size",
    "identity",
    "move_aside",
    "open_private",
    "prepare_directory",
    "prepare_file",
    "prepare_spool_dir",
    "side_files",
    "spool_dir_of",
]

SIDE_SUFFIXES: Final = ("-wal", "-shm", "-journal")
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


class NotOursError(OutboxError):
    """A file or directory of the outbox that another user owns, that group or others may
    write, or that is a symbolic link: refused, never written."""


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _check_ours(path: pathlib.Path, info: os.stat_result, kind: str) -> None:
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None:  # pragma: no cover - Windows: no uids
        return
    me = geteuid()
    if info.st_uid != me or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise NotOursError(
            f"refusing the {kind} {path}: owned by {_owner(info.st_uid)}, mode "
            f"{stat.S_IMODE(info.st_mode):04o}; it must belong to {_owner(me)} and not be "
            "writable by group or others (another user could read the events or plant one)"
        )


def check_dir(path: pathlib.Path, kind: str = "outbox directory") -> None:
    """Refuse a directory that is not ours (NotOursError); OutboxError when it is missing."""
    try:
        info = os.stat(path)  # a symlinked directory (~/.local/state -> /data/...) is fine
    except OSError as exc:
        raise OutboxError(f"cannot use the {kind} {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise OutboxError(f"the {kind} {path} is not a directory")
    _check_ours(path, info, kind)


def check_file(path: pathlib.Path, kind: str) -> bool:
    """Refuse an existing file that is not ours or is a symlink; False when it does not exist."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OutboxError(f"cannot use the {kind} {path}: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(info.st_mode):
        raise NotOursError(
            f"refusing the {kind} {path}: it is a symbolic link (to {os.readlink(path)}); "
            "the outbox never writes through one"
        )
    if not stat.S_ISREG(info.st_mode):
        raise NotOursError(f"refusing the {kind} {path}: not a regular file")
    _check_ours(path, info, kind)
    return True


def open_private(path: pathlib.Path, kind: str) -> None:
    """Create ``path`` (0600) if missing, never through a symlink, and check it is ours.

    An existing file is only looked at (``lstat``), never opened: closing a descriptor of a
    database drops every POSIX lock this process's SQLite connections hold on it
    (sqlite.org/howtocorrupt.html section 2.2). With a second outbox opened on the same path
    in one process, another process's last close then took itself for the last connection
    and deleted the live ``-wal``: the file was taken for lost and moved aside.
    """
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
            break
        except FileExistsError:
            # Ours, a regular file, not a link (NotOursError if not); gone again: create it.
            if check_file(path, kind):
                return
        except OSError as exc:
            raise OutboxError(
                f"cannot create or open {kind} {path}: {exc.strerror or exc}"
            ) from exc
    else:
        raise OutboxError(f"the {kind} {path} keeps disappearing")
    try:
        _check_ours(path, os.fstat(fd), kind)
    finally:
        os.close(fd)


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


def prepare_directory(path: pathlib.Path) -> None:
    """Create the outbox's directory (0700) if missing and check it is ours."""
    if not path.parent.is_dir():
        try:
            os.makedirs(path.parent, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise OutboxError(
                f"cannot create the directory {path.parent} for outbox {path}: "
                f"{exc.strerror or exc}"
            ) from exc
    check_dir(path.parent)


def prepare_file(path: pathlib.Path, now: float) -> None:
    """Create an empty file (0600) if missing; OutboxError if it cannot be used.

    Call it under :func:`creation_lock`. Side files found beside a missing file belong to a
    deleted one (``rm outbox.sqlite3`` while a client runs): SQLite would replay that -wal
    into the new file, and the new file's writes would overwrite the frames the running client
    still reads through it, so they are moved aside (the running client keeps them open and
    moves its rows over when it notices the loss).
    """
    if path.is_dir() and not path.is_symlink():
        raise OutboxError(f"outbox path {path} is a directory, not a file")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutboxError(f"cannot write outbox {path}: its directory is not writable")
    if not check_file(path, "outbox file"):
        for side in side_files(path).values():
            if os.path.lexists(side):
                aside = move_aside(side, "stale", now)
                logger.warning(
                    "%s lay beside no outbox file (it belonged to a deleted one); moved it "
                    "aside to %s",
                    side,
                    aside,
                )
    for side in side_files(path).values():  # SQLite opens these by name: they must be ours
        check_file(side, "outbox side file")
    open_private(path, "outbox file")  # SQLite gives -wal/-shm the mode of this file


#: This thread's nesting of :func:`creation_lock` (a recreate opens the new file inside it).
_creating = threading.local()


@contextlib.contextmanager
def creation_lock(path: pathlib.Path, timeout: float) -> Iterator[None]:
    """An exclusive ``flock`` on the outbox's directory while its file is created, checked and
    set up, or recreated after a loss: openers and recreators take turns, so what one finds
    (a successor another process just made, side files beside a missing file) is whole.

    Waits at most ``timeout`` seconds, then goes on without it (a stopped process holding it
    must not stop every other); reentrant in one thread; a no-op without ``flock``.
    """
    depth = getattr(_creating, "depth", 0)
    fd = -1
    if not depth and fcntl is not None:
        with contextlib.suppress(OSError):
            fd = os.open(path.parent, os.O_RDONLY | _CLOEXEC)
        patience = Patience(timeout)
        while fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:  # held by another opener: wait for it, boundedly
                if patience.wait():
                    continue
            except OSError:  # no flock on this file system: go on without
                pass
            os.close(fd)
            fd = -1
    _creating.depth = depth + 1
    try:
        yield
    finally:
        _creating.depth = depth
        if fd >= 0:
            os.close(fd)  # releases the flock


def prepare_spool_dir(spool_dir: pathlib.Path) -> None:
    """Create the spool directory (0700), and the outbox's directory (0700) if it is gone;
    NotOursError for a spool directory that is not ours."""
    for _ in range(5):
        if not spool_dir.parent.is_dir():
            os.makedirs(spool_dir.parent, mode=0o700, exist_ok=True)  # as prepare_location does
        with contextlib.suppress(FileExistsError):
            os.mkdir(spool_dir, 0o700)
        if os.path.islink(spool_dir):
            raise NotOursError(f"refusing the spool directory {spool_dir}: it is a symbolic link")
        try:
            check_dir(spool_dir, "spool directory")
        except NotOursError:
            raise
        except OutboxError:
            if os.path.lexists(spool_dir):
                raise
            # Another outbox closing just now removed it (it was empty): make it again.
            # Reproduce: 50 processes that each open, track one event and close at once.
            continue
        return
    raise OutboxError(f"the spool directory {spool_dir} keeps disappearing")


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
