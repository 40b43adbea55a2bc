"""The public door: exactly the documented names, and an import that costs nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

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
}


def test_all_is_exactly_the_documented_surface() -> None:
    """__all__ lists the documented public names (sdk.md), sorted."""
    assert set(mosaic_telemetry.__all__) == PUBLIC
    assert mosaic_telemetry.__all__ == sorted(mosaic_telemetry.__all__)


def test_all_is_exactly_what_the_module_exposes() -> None:
    """Every name of __all__ resolves, dir() lists it, and no other public-looking attribute
    leaks, before and after every lazy name was loaded."""
    for name in mosaic_telemetry.__all__:
        assert getattr(mosaic_telemetry, name) is not None, name
    exposed = {
        name
        for name, value in vars(mosaic_telemetry).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert exposed | {"__version__"} == set(mosaic_telemetry.__all__)
    listed = {
        name
        for name in dir(mosaic_telemetry)
        if not name.startswith("_")
        and not isinstance(getattr(mosaic_telemetry, name), types.ModuleType)  # testing, cli
    }
    assert listed == set(mosaic_telemetry.__all__) - {"__version__"}
    assert "__version__" in dir(mosaic_telemetry)


def test_the_door_is_lazy_and_exact_in_a_fresh_interpreter() -> None:
    """`import mosaic_telemetry` loads no module of the package; dir() already lists every
    public name; `from mosaic_telemetry import TaskType` loads the enums alone."""
    code = (
        "import sys, json, mosaic_telemetry as m; "
        "before = sorted(k for k in sys.modules if k.startswith('mosaic_telemetry.')); "
        "listed = sorted(n for n in dir(m) if n in m.__all__); "
        "from mosaic_telemetry import TaskType; "
        "after = sorted(k for k in sys.modules if k.startswith('mosaic_telemetry.')); "
        "print(json.dumps([before, listed == sorted(m.__all__), after]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [[], True, ["mosaic_telemetry._enums"]]


def test_version_is_resolved_lazily() -> None:
    """``__version__`` is computed on access (no module global), unknown names raise
    AttributeError."""
    assert "__version__" not in vars(mosaic_telemetry)
    assert isinstance(mosaic_telemetry.__version__, str)
    assert "__version__" not in vars(mosaic_telemetry)  # served by __getattr__, not stored
    unknown = "no_such_name"
    with pytest.raises(AttributeError, match=unknown):
        getattr(mosaic_telemetry, unknown)


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
    member: str = mosaic_telemetry.TaskType.CODE_REVIEW  # accepted by mypy: a str subclass
    assert isinstance(member, str) and member == "code_review"
    assert str(mosaic_telemetry.Harness.CLAUDE_CODE) == "claude_code"
    assert [c.value for c in mosaic_telemetry.Confidence] == ["none", "low", "medium", "high"]
