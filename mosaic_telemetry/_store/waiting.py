"""A bounded wait with growing pauses, for locks that SQLite or the OS will not wait for.

SQLite answers a switch to WAL with "locked" at once (no busy handler), and a non-blocking
``flock`` fails at once; both are tried again after 1 ms, 2 ms, 4 ms ... at most 50 ms
apart, until the caller's timeout. The clock and the sleep are injectable for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

__all__ = ["Patience"]

FIRST_PAUSE_SECONDS: Final = 0.001
LAST_PAUSE_SECONDS: Final = 0.05


class Patience:
    """``wait()`` sleeps the next pause and returns True, or returns False (without
    sleeping) once ``timeout`` seconds have passed since it was made."""

    def __init__(
        self,
        timeout: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._deadline = clock() + timeout
        self._pause = FIRST_PAUSE_SECONDS

    def wait(self) -> bool:
        """Pause before the next try; False when the time is up (give up instead)."""
        if self._clock() >= self._deadline:
            return False
        self._sleep(self._pause)
        self._pause = min(self._pause * 2, LAST_PAUSE_SECONDS)
        return True
