"""The public door: exactly the documented names, and an import that costs nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import mosaic_telemetry

PUBLIC = {
    "Complexity",
    "Confidence",
    "ConfigError",
    "EventBuilder",
    "EventValidationError",
    "FlushResult",
    "Harness",
    "Outcome",
    "OutboxBusyError",
    "OutboxError",
    "PredictionData",
    "PredictionMetadata",
    "PredictionQuery",
    "PredictionResponse",
    "Provider",
    "QualityGate",
    "QualityPrediction",
    "RepoSizeCategory",
    "TaskCompletionEvent",
    "TaskType",
    "TelemetryClient",
    "TelemetryConfig",
    "TelemetryError",
    "TokenDistribution",
    "TransportError",
    "__version__",
}


def test_all_is_exactly_the_public_surface() -> None:
    """__all__ lists the public names, sorted, and each one resolves."""
    assert set(mosaic_telemetry.__all__) == PUBLIC
    assert mosaic_telemetry.__all__ == sorted(mosaic_telemetry.__all__)
    for name in mosaic_telemetry.__all__:
        assert getattr(mosaic_telemetry, name) is not None


def test_version() -> None:
    """__version__ is the package version."""
    assert mosaic_telemetry.__version__ == "0.1.0"


def test_import_loads_no_http_or_serialisation_stack() -> None:
    """`import mosaic_telemetry` loads neither requests, cattrs, tenacity nor platformdirs."""
    code = (
        "import sys, json, mosaic_telemetry; "
        "print(json.dumps(sorted(m for m in ('requests', 'cattrs', 'tenacity', 'platformdirs', "
        "'urllib3', 'importlib.metadata') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_enums_are_wire_strings() -> None:
    """Enum members are str subclasses equal to their lowercase wire value."""
    assert mosaic_telemetry.TaskType.CODE_REVIEW == "code_review"
    assert str(mosaic_telemetry.Harness.CLAUDE_CODE) == "claude_code"
    assert [c.value for c in mosaic_telemetry.Confidence] == ["none", "low", "medium", "high"]
