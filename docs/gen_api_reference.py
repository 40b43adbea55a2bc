"""Write docs/api-reference.md from the public objects' signatures and docstrings.

Run ``python docs/gen_api_reference.py`` after changing a public name or docstring; the test
suite fails while the page and the code disagree.
"""

from __future__ import annotations

import enum
import inspect
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mosaic_telemetry  # noqa: E402
from mosaic_telemetry import testing  # noqa: E402

INTRO = """# API reference

Everything public is exported from `mosaic_telemetry` (listed in `__all__`), plus the
`mosaic_telemetry.testing` module for your own tests. Anything else (modules whose name starts
with `_`) may change without notice. This page is generated from the code's signatures and
docstrings by `python docs/gen_api_reference.py`; a test keeps them in step.

"""

SECTIONS = [
    ("Client and configuration", ["TelemetryClient", "TelemetryConfig", "FlushResult"]),
    ("Events", ["EventBuilder", "TaskCompletionEvent", "TaskRecorder"]),
    ("Transport seam", ["Transport", "TransportRequest", "TransportResponse"]),
    (
        "Predictions",
        [
            "PredictionQuery",
            "PredictionResponse",
            "PredictionData",
            "PredictionMetadata",
            "TokenDistribution",
            "QualityPrediction",
        ],
    ),
    (
        "Enums",
        [
            "TaskType",
            "Complexity",
            "Harness",
            "Provider",
            "QualityGate",
            "Outcome",
            "RepoSizeCategory",
            "Confidence",
        ],
    ),
    (
        "Exceptions",
        [
            "TelemetryError",
            "EventValidationError",
            "ConfigError",
            "OutboxError",
            "OutboxBusyError",
            "TransportError",
        ],
    ),
    ("Version", ["__version__"]),
]
TESTING = [
    "FakeTelemetryServer",
    "ScriptedReply",
    "RecordedRequest",
    "MockTransport",
    "TransportRequest",
    "TransportResponse",
    "example_event_builder",
]


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _signature(obj: Any) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    text = re.sub(r"<built-in function (\w+)>", r"time.\1", text)
    return text.replace("'", "")


def _members(cls: type) -> list[str]:
    lines = []
    for name, member in sorted(vars(cls).items()):
        if name.startswith("_") and name not in ("__enter__", "__aenter__"):
            continue
        if isinstance(member, property):
            lines.append(
                f"- `{name}` (property): {_doc(member).splitlines()[0] if _doc(member) else ''}"
            )
        elif isinstance(member, (staticmethod, classmethod)):
            func = member.__func__
            lines.append(f"- `{name}{_signature(func)}`: {_first(func)}")
        elif inspect.isfunction(member):
            prefix = "async " if inspect.iscoroutinefunction(member) else ""
            lines.append(f"- `{prefix}{name}{_signature(member)}`: {_first(member)}")
    return lines


def _first(obj: Any) -> str:
    doc = _doc(obj)
    return doc.split("\n\n", 1)[0].replace("\n", " ") if doc else ""


def _render(name: str, obj: Any) -> list[str]:
    out = [f"### `{name}`", ""]
    if name == "__version__":
        return [*out, "The installed version as a string (PEP 440), read on first access.", ""]
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        out += [
            _doc(obj),
            "",
            "Members: " + ", ".join(f"`{m.name}` (`{m.value!s}`)" for m in obj),
            "",
        ]
        return out
    if isinstance(obj, type) and issubclass(obj, BaseException):
        bases = ", ".join(f"`{b.__name__}`" for b in obj.__bases__)
        return [*out, f"Subclass of {bases}. {_doc(obj)}", ""]
    if isinstance(obj, type):
        out += [f"`{name}{_signature(obj)}`", "", _doc(obj), ""]
        members = _members(obj)
        if members:
            out += [*members, ""]
        return out
    return [*out, f"`{name}{_signature(obj)}`", "", _doc(obj), ""]


def render() -> str:
    """The whole page."""
    lines = [INTRO.rstrip("\n"), ""]
    documented = set()
    for title, names in SECTIONS:
        lines += [f"## {title}", ""]
        for name in names:
            lines += _render(name, getattr(mosaic_telemetry, name))
            documented.add(name)
    missing = set(mosaic_telemetry.__all__) - documented
    if missing:
        raise SystemExit(f"public names without a section: {sorted(missing)}")
    lines += [
        "## Testing helpers (`mosaic_telemetry.testing`)",
        "",
        _doc(testing).split("\n\n")[0],
        "",
    ]
    for name in TESTING:
        lines += _render(name, getattr(testing, name))
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    (ROOT / "docs" / "api-reference.md").write_text(render())
