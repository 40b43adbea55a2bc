"""A bounded in-memory queue of events ``track()`` could not write in time, and the one
function that writes it into the outbox.

Used only when another writer held the outbox lock for longer than ``track()`` may wait; the
worker (or, for a client that was never started, a short-lived thread) persists these events
later. This is the one window in which a kill -9 can lose a tracked event; it is counted in
``handed_off``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from .. import _forksafe
from .._exceptions import OutboxError
from .ports import Outbox

__all__ = ["Handoff"]


class Handoff:
    """The hand-off queue; ``persist_into()`` writes it to an outbox."""

    def __init__(self, capacity: int) -> None:
        self._lock = threading.Lock()
        self._items: deque[tuple[str, str]] = deque()
        self._capacity = capacity
        _forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        # The queued events belong to the parent, which persists them.
        self._lock = threading.Lock()
        self._items = deque()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event_id: str, text: str) -> bool:
        """Queue one event; False when full (the caller counts it lost)."""
        with self._lock:
            if len(self._items) >= self._capacity:
                return False
            self._items.append((event_id, text))
            return True

    def take_all(self) -> list[tuple[str, str]]:
        """Remove and return everything queued."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            return items

    def put_back(self, items: Sequence[tuple[str, str]]) -> None:
        """Return items that could not be persisted to the front of the queue."""
        with self._lock:
            self._items.extendleft(reversed(items))

    def persist_into(self, outbox: Outbox, batch_size: int) -> int:
        """Write the queue into ``outbox`` in batches; returns how many rows were evicted.

        In batches: on a nearly full disk what fits is written (and sent, freeing room for the
        rest); all at once, one transaction too big to fit kept every event in memory. On an
        OutboxError what is left goes back to the queue and the error propagates.
        """
        items = self.take_all()
        evicted = 0
        for start in range(0, len(items), batch_size):
            try:
                _inserted, dropped = outbox.add_many(items[start : start + batch_size])
            except OutboxError:
                self.put_back(items[start:])
                raise
            evicted += dropped
        return evicted
