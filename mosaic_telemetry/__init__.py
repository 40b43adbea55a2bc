"""mosaic_telemetry: report what each AI coding task cost and how it went, durably.

Every tracked event is written to a SQLite outbox before ``track()`` returns; one worker
thread per process delivers the outbox to the Mosaic Telemetry API v1. Importing this package
loads neither ``requests``, ``cattrs`` nor ``tenacity``: they are loaded by the first client
that starts (never on the worker thread itself).

This module is the one public door; everything else lives in private ``_modules``. The door
is lazy (PEP 562): each public name is imported from its module on first use, so
``from mosaic_telemetry import TaskType`` loads the enums and nothing else, and
``import mosaic_telemetry`` alone loads no module of the package.
"""

import importlib as _importlib

# typing.TYPE_CHECKING without importing typing (3 ms); deleted below, so that every
# public-looking name of this module is in __all__.
TYPE_CHECKING = False
if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports these
    from ._builder import EventBuilder
    from ._client import TelemetryClient
    from ._config import TelemetryConfig
    from ._delivery.seam import Transport, TransportRequest, TransportResponse
    from ._delivery.stats import FlushResult
    from ._enums import (
        Complexity,
        Confidence,
        Harness,
        Outcome,
        Provider,
        QualityGate,
        RepoSizeCategory,
        TaskType,
    )
    from ._exceptions import (
        ConfigError,
        EventValidationError,
        OutboxBusyError,
        OutboxError,
        TelemetryError,
        TransportError,
    )
    from ._models import (
        PredictionData,
        PredictionMetadata,
        PredictionQuery,
        PredictionResponse,
        QualityPrediction,
        TaskCompletionEvent,
        TokenDistribution,
    )
    from ._task import TaskRecorder

    __version__: str

__all__ = [
    "Complexity",
    "Confidence",
    "ConfigError",
    "EventBuilder",
    "EventValidationError",
    "FlushResult",
    "Harness",
    "OutboxBusyError",
    "OutboxError",
    "Outcome",
    "PredictionData",
    "PredictionMetadata",
    "PredictionQuery",
    "PredictionResponse",
    "Provider",
    "QualityGate",
    "QualityPrediction",
    "RepoSizeCategory",
    "TaskCompletionEvent",
    "TaskRecorder",
    "TaskType",
    "TelemetryClient",
    "TelemetryConfig",
    "TelemetryError",
    "TokenDistribution",
    "Transport",
    "TransportError",
    "TransportRequest",
    "TransportResponse",
    "__version__",
]

#: The private module each public name lives in.
_HOMES: dict[str, str] = {
    "EventBuilder": "._builder",
    "TelemetryClient": "._client",
    "TelemetryConfig": "._config",
    **dict.fromkeys(("Transport", "TransportRequest", "TransportResponse"), "._delivery.seam"),
    "FlushResult": "._delivery.stats",
    **dict.fromkeys(
        (
            "Complexity",
            "Confidence",
            "Harness",
            "Outcome",
            "Provider",
            "QualityGate",
            "RepoSizeCategory",
            "TaskType",
        ),
        "._enums",
    ),
    **dict.fromkeys(
        (
            "ConfigError",
            "EventValidationError",
            "OutboxBusyError",
            "OutboxError",
            "TelemetryError",
            "TransportError",
        ),
        "._exceptions",
    ),
    **dict.fromkeys(
        (
            "PredictionData",
            "PredictionMetadata",
            "PredictionQuery",
            "PredictionResponse",
            "QualityPrediction",
            "TaskCompletionEvent",
            "TokenDistribution",
        ),
        "._models",
    ),
    "TaskRecorder": "._task",
}


if not TYPE_CHECKING:  # hidden from type checkers: a misspelt name stays an error there

    def __getattr__(name: str) -> object:
        """Import a public name from its module on first use, then keep it here (PEP 562)."""
        if name == "__version__":
            # Read from package metadata on first use: importlib.metadata is slow to load.
            from ._version import get_version

            return get_version()
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(_importlib.import_module(home, __name__), name)
        globals()[name] = value  # the next lookup is a plain module attribute
        return value

    def __dir__() -> list[str]:
        """The module's attributes and every public name, loaded or not."""
        return sorted({*globals(), *__all__})


del TYPE_CHECKING
