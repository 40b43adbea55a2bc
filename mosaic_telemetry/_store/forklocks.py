"""SQLite's process-wide mutexes, held by the forking thread across ``fork()``.

SQLite keeps a few static mutexes for the whole process (its allocator's, the unix VFS's, the
main one). A thread that holds one at the instant another thread forks leaves it locked
forever in the child: the child's first SQLite call hangs. The outbox's own calls run inside
the registry's gate, which a fork drains first, but any SQLite use outside it (another library,
a connection freed by a garbage collection) can hold one. So, like a library's
``pthread_atfork`` handlers, the forking thread takes them all just before the fork (waiting for
whoever holds one to finish its short critical section) and releases them on both sides.
Reproduce the hang without this: ``tests/reliability/test_fork_storm.py`` (a child stuck in
``sqlite3Malloc``, seen with gdb).

Best effort: reached through ``ctypes`` in the library ``_sqlite3`` is linked to. Where that
is not possible (no ``ctypes``, SQLite linked in statically without exported symbols, a build
without mutexes) nothing is held and the gate alone protects the outbox's own calls.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Final

__all__ = ["hold", "prepare", "release"]

# SQLITE_MUTEX_STATIC_* of sqlite3.h, in the order SQLite itself nests them (an outer one is
# taken before an inner one: OPEN -> VFS1 -> MEM, LRU -> MEM); the allocator's (MEM) is a leaf.
_STATIC_MAIN: Final = 2
_STATIC_OPEN: Final = 4
_STATIC_VFS1: Final = 11  # the unix VFS's lock on its open-file bookkeeping
_STATIC_LRU: Final = 6
_STATIC_PRNG: Final = 5
_STATIC_MEM: Final = 3
_ORDER: Final = (_STATIC_MAIN, _STATIC_OPEN, _STATIC_VFS1, _STATIC_LRU, _STATIC_PRNG, _STATIC_MEM)


def _load() -> tuple[Any, list[int]]:
    """(the library, its static mutexes in order), or (None, []) when unreachable."""
    try:
        import _sqlite3
        import ctypes

        lib = ctypes.CDLL(_sqlite3.__file__)
        alloc = lib.sqlite3_mutex_alloc
        alloc.restype = ctypes.c_void_p
        alloc.argtypes = [ctypes.c_int]
        for name in ("sqlite3_mutex_enter", "sqlite3_mutex_leave"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = None
        mutexes = [m for m in (alloc(kind) for kind in _ORDER) if m]
    except Exception:  # no ctypes, no exported symbol, an unexpected build
        return None, []
    return lib, mutexes


_LIB: Any = None
_MUTEXES: list[int] = []
_loaded = False
#: What this thread holds. Per thread: two threads may fork at once, and the second one's
#: hold() then waits here until the first one's fork is over and it has released them.
_local = threading.local()


def prepare() -> None:
    """Find the mutexes (once, when this process opens its first outbox connection): ``ctypes``
    is loaded then, never by ``import mosaic_telemetry`` and never inside a fork hook."""
    global _LIB, _MUTEXES, _loaded
    if not _loaded:
        _LIB, _MUTEXES = _load()
        _loaded = True


def hold() -> None:
    """Take every static mutex (the forking thread, just before ``fork()``)."""
    if _LIB is None or getattr(_local, "held", None):
        return
    held: list[int] = []
    for mutex in _MUTEXES:
        _LIB.sqlite3_mutex_enter(mutex)
        held.append(mutex)
    _local.held = held


def release() -> None:
    """Give back what this thread holds, innermost first (in the parent, and in the child,
    where the forking thread is the only one and still holds them)."""
    held: list[int] = getattr(_local, "held", None) or []
    _local.held = []
    for mutex in reversed(held):
        with contextlib.suppress(Exception):
            _LIB.sqlite3_mutex_leave(mutex)
