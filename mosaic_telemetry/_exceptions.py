"""The one exception tree of mosaic_telemetry.

::

    TelemetryError                      base of everything the SDK raises
    ├── EventValidationError(ValueError) an event (or builder) broke schema 1.0
    ├── ConfigError(ValueError)          a TelemetryConfig value is unusable
    ├── OutboxError                      the SQLite outbox cannot be used
    │   └── OutboxBusyError              another writer held the lock too long
    └── TransportError                   the HTTP exchange failed (mapped from requests)

``track()`` never raises any of these; they surface from ``build()``, from
``TelemetryConfig`` and from the lower layers, where the client catches them.
Callers never see ``requests.*`` or ``sqlite3.*`` exceptions.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "EventValidationError",
    "OutboxBusyError",
    "OutboxError",
    "TelemetryError",
    "TransportError",
]


class TelemetryError(Exception):
    """Base class of every exception mosaic_telemetry raises."""


class EventValidationError(TelemetryError, ValueError):
    """An event is invalid; ``problems`` lists every ``"field: rule"`` at once."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"invalid event ({count} {noun}): " + "; ".join(self.problems))


class ConfigError(TelemetryError, ValueError):
    """A configuration value is unusable; ``problems`` lists each one."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("invalid telemetry configuration: " + "; ".join(self.problems))


class OutboxError(TelemetryError):
    """The outbox file cannot be opened, read or written."""


class OutboxBusyError(OutboxError):
    """Another connection held the outbox write lock past our short busy timeout."""


class TransportError(TelemetryError):
    """An HTTP exchange with the Telemetry API failed before a usable reply."""
