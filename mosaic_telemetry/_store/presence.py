"""Presence: each outbox in each process holds a lock for its whole life, so others can tell
whether it is alive.

An outbox's presence is a token (uuid4 hex) and an exclusive ``flock`` on
``<outbox>.spool/<token>.lock`` (directory 0700, file 0600, descriptor ``O_CLOEXEC``), taken
when the outbox opens and held until it closes or the process ends. Another process tells
whether that outbox lives by trying ``flock(LOCK_EX | LOCK_NB)`` on a fresh descriptor of the
file: refused means alive, granted means dead (:func:`probe`). The kernel drops the lock when
the process dies, however it dies, so neither pid reuse nor a wall clock can fool it.

Why ``flock`` and not ``fcntl`` (POSIX) locks: SQLite itself uses POSIX locks, and closing
*any* descriptor of a file drops every POSIX lock the process holds on it; a ``flock`` belongs
to one open file description and ends only when that description is closed. For the same
reason a forked child must ``os.close()`` the descriptor it inherited (never ``LOCK_UN``,
which would release the parent's lock too) and take a presence of its own
(:meth:`Presence.after_fork_in_child`).

The lock file appears already locked: it is created under a temporary name, locked, and then
renamed into place, so no prober can ever see an unlocked file of a live outbox.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import uuid
from typing import Final

from .files import prepare_spool_dir

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no presence; leases fall back to pid + clock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "AVAILABLE",
    "Presence",
    "adopt_lock",
    "lock_path",
    "own_tokens",
    "probe",
    "unlocked",
]

AVAILABLE: Final = fcntl is not None
LOCK_SUFFIX: Final = ".lock"
_FLAGS: Final = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
#: (pid, token) of every presence this process holds: never probed, never opened twice.
_OWN: set[tuple[int, str]] = set()


def lock_path(spool_dir: pathlib.Path, token: str) -> pathlib.Path:
    """Where the presence lock of ``token`` lives."""
    return spool_dir / f"{token}{LOCK_SUFFIX}"


def own_tokens() -> frozenset[str]:
    """The presence tokens of this process."""
    pid = os.getpid()
    return frozenset(token for p, token in _OWN if p == pid)


class Presence:
    """This outbox's presence in this process: a token and the flock that proves it lives."""

    def __init__(self, spool_dir: pathlib.Path) -> None:
        self.spool_dir = spool_dir
        self.token = uuid.uuid4().hex
        self._fd: int | None = None
        self._pid = os.getpid()

    @property
    def held(self) -> bool:
        """Whether this process holds the lock now."""
        return self._fd is not None and self._pid == os.getpid()

    def acquire(self) -> None:
        """Create ``<token>.lock`` already locked; OSError when the directory is unusable."""
        if self.held or not AVAILABLE:
            return
        final = lock_path(self.spool_dir, self.token)
        temporary = self.spool_dir / f".{self.token}.tmp"
        for attempt in range(3):
            prepare_spool_dir(self.spool_dir)
            try:
                fd = os.open(temporary, _FLAGS | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileNotFoundError:  # another outbox removed the empty directory just now
                if attempt == 2:
                    raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(temporary, final)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._fd = fd
        self._pid = os.getpid()
        _OWN.add((self._pid, self.token))

    def ensure(self) -> None:
        """Take the lock again if its file was deleted (``rm -rf`` of the state directory)
        while we hold it: a new file, same token, so peers keep seeing us alive."""
        if not self.held:
            self.acquire()
            return
        assert self._fd is not None
        try:
            named = os.stat(lock_path(self.spool_dir, self.token))
            mine = os.fstat(self._fd)
            if (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino):
                return
        except FileNotFoundError:
            pass
        old, self._fd = self._fd, None
        try:
            self.acquire()
        finally:
            os.close(old)

    def release(self) -> None:
        """Delete the lock file, then drop the lock (a clean close of the outbox), and the
        spool directory if nothing else is in it."""
        if not self.held:
            return
        with contextlib.suppress(OSError):
            os.unlink(lock_path(self.spool_dir, self.token))
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        _OWN.discard((os.getpid(), self.token))
        with contextlib.suppress(OSError):  # not empty: other presences or spools live there
            os.rmdir(self.spool_dir)

    def abandon(self) -> None:
        """Drop the lock but leave the file: its spool is adopted by the next process."""
        if self.held:
            assert self._fd is not None
            os.close(self._fd)
            _OWN.discard((os.getpid(), self.token))
        self._fd = None

    def after_fork_in_child(self) -> None:
        """Close the inherited descriptor (never LOCK_UN: that drops the parent's lock too),
        and become a new presence; the lock is taken again on first use."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self.token = uuid.uuid4().hex
        self._pid = os.getpid()


def probe(spool_dir: pathlib.Path, token: str) -> bool | None:
    """Whether the outbox of ``token`` is alive: True, False, or None (no lock file to ask)."""
    if not AVAILABLE:
        return None
    if token in own_tokens():
        return True  # ours: never probed, never opened a second time
    try:
        fd = os.open(lock_path(spool_dir, token), _FLAGS)
    except FileNotFoundError:
        return None
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        return None
    finally:
        os.close(fd)  # closing our own description also ends the lock we may have taken
    return False


def adopt_lock(spool_dir: pathlib.Path, token: str) -> int | None:
    """Take the lock of a dead presence for its adoption: the descriptor, or None when it is
    alive (or already being adopted by someone else). Close it after deleting the file."""
    if not AVAILABLE or token in own_tokens():
        return None
    try:
        fd = os.open(lock_path(spool_dir, token), _FLAGS)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def unlocked(path: pathlib.Path) -> bool:
    """Whether nobody holds a flock on ``path`` (a lock file of a presence that died)."""
    if not AVAILABLE:
        return False
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True
