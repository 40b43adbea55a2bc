"""Objects that hold locks renew them in a forked child.

A lock held by another thread at the moment of ``fork()`` stays held forever in the child
(that thread does not exist there), so the child's first use deadlocks. Every object of the SDK
that owns a lock registers here; in the child, one ``os.register_at_fork`` hook calls each
one's ``_after_fork_in_child()``, which must make fresh locks and forget thread-bound state.
Reproduce the hazard: fork from one thread while another holds the lock (``tests/reliability/
test_fork.py``).
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["ForkAware", "register"]


class ForkAware(Protocol):
    """An object that renews its locks in a forked child."""

    def _after_fork_in_child(self) -> None: ...


_REGISTRY: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def register(obj: ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every child forked while ``obj`` is alive."""
    _REGISTRY.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_REGISTRY):
        obj._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
