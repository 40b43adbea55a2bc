"""The clients of this process, for the two moments that concern them all: a fork and exit.

In a forked child every client forgets its parent's worker and locks (it starts its own on
first use); at interpreter exit every running client stops within its own
``shutdown_timeout_seconds``, all of them at once rather than one after the other.
"""

from __future__ import annotations

import atexit
import os
import weakref
from typing import Protocol

__all__ = ["register"]


class Client(Protocol):
    """What the two hooks need of a client."""

    def _after_fork(self) -> None: ...
    def _ask_to_stop(self) -> None: ...
    def _stop_at_exit(self) -> None: ...


_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()


def register(client: Client) -> None:
    """Include ``client`` in the fork and exit hooks while it is alive."""
    _CLIENTS.add(client)


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        client._after_fork()


def _stop_all_at_exit() -> None:
    # Every worker is asked first, so N clients share one shutdown_timeout instead of taking
    # N of them one after the other (no threads: they cannot start during finalization).
    clients = list(_CLIENTS)
    for client in clients:
        client._ask_to_stop()
    for client in clients:
        client._stop_at_exit()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_stop_all_at_exit)
