"""mosaic_telemetry: report what each AI coding task cost and how it went, durably.

Every tracked event is written to a SQLite outbox before ``track()`` returns; one worker
thread per process delivers the outbox to the Mosaic Telemetry API v1. Importing this package
loads neither ``requests``, ``cattrs`` nor ``tenacity``: they are loaded by the first client
that starts (never on the worker thread itself).

This module is the one public door; everything else lives in private ``_modules``.
"""

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


def __getattr__(name: str) -> str:
    # The version is read from package metadata on first use: importlib.metadata is slow to load.
    if name == "__version__":
        from ._version import get_version

        return get_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
