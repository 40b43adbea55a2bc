"""The SDK's logger and a rate limiter for repeated errors.

Everything goes to the ``mosaic_telemetry`` logger (never the root logger), to which the SDK
adds only a ``NullHandler``: the application decides where the lines go. A background
failure that repeats (server down for an hour) is logged once per ``interval`` per key, with
the number of repeats held back, so the SDK never floods the host's logs. The key is never
logged: messages are built from our own texts and server replies only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from . import _forksafe

__all__ = ["RateLimitedLogger", "logger"]

logger = logging.getLogger("mosaic_telemetry")
# A library leaves the choice of handlers to the application, as requests and urllib3 do:
# this one keeps Python's last-resort handler from printing our warnings on the host's stderr
# when the host configured no logging. Errors stay visible through ``on_error`` and
# ``stats()``; docs/integration-guide.md ("Seeing the SDK's log lines") shows how to see them.
logger.addHandler(logging.NullHandler())
#: Set while this thread is inside one of our log calls: a log handler that calls track()
#: (telemetry about logs, say) must not make the SDK log again, recursively.
_emitting = threading.local()


class RateLimitedLogger:
    """Logs a message at most once per ``interval`` seconds for each key."""

    def __init__(
        self,
        interval: float = 60.0,
        *,
        target: logging.Logger = logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._target = target
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        _forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        # The lock may have been copied while another thread of the parent held it.
        self._lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``key`` was logged within the interval; True if logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            msg += " (%d similar messages held back)"
            args = (*args, held)
        if getattr(_emitting, "active", False):
            return False  # a handler of ours called back into the SDK: never loop
        _emitting.active = True
        try:
            self._target.log(level, msg, *args)
        finally:
            _emitting.active = False
        return True

    def error(self, key: str, msg: str, *args: object) -> bool:
        """Rate-limited ``logger.error``."""
        return self.log(logging.ERROR, key, msg, *args)

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """Rate-limited ``logger.warning``."""
        return self.log(logging.WARNING, key, msg, *args)

    def reset(self, key: str) -> None:
        """Forget ``key`` so its next message is logged at once (a failure streak ended)."""
        with self._lock:
            self._last.pop(key, None)
            self._held.pop(key, None)
