"""The one cattrs converter of the SDK, built once on first use.

It unstructures our models for JSON (UUIDs as text, datetimes as ISO-8601 UTC with ``Z``, gate
tuples as lists of wire strings) and structures server replies leniently: unknown keys are
ignored, an unknown confidence string is kept as text, and scalars are strict (no ``true`` as
a count, no ``"5"`` as 5; an int is accepted where a float is expected). cattrs (about 40 ms to
import) is loaded here only, never by ``import mosaic_telemetry``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .._enums import Confidence, QualityGate
from .._event_rules import parse_iso_timestamp as parse_timestamp

if TYPE_CHECKING:
    import cattrs

__all__ = ["converter", "format_timestamp", "parse_timestamp", "structure_errors"]


def format_timestamp(value: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix and microseconds, as the wire expects."""
    if value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    text = value.isoformat()[:-6]  # without "+00:00"; isoformat(timespec=...) is 1.5x slower
    return text + "Z" if value.microsecond else text + ".000000Z"


def _structure_confidence(value: Any, _type: Any) -> Confidence | str:
    if not isinstance(value, str):
        raise TypeError(f"confidence must be a string, got {value!r}")
    try:
        return Confidence(value)
    except ValueError:
        return value


def _structure_datetime(value: Any, _type: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"must be an ISO-8601 string, got {value!r}")
    parsed = parse_timestamp(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _strict_scalar(kind: type[Any]) -> Any:
    """A structure hook that accepts ``kind`` only (no bool as int, no "5" as 5; int as float)."""

    def structure(value: Any, _type: Any) -> Any:
        if kind is not bool and isinstance(value, bool):
            raise TypeError(f"expected {kind.__name__}, got {value!r}")
        if isinstance(value, kind):
            return value
        if kind is float and isinstance(value, int):
            return float(value)
        raise TypeError(f"expected {kind.__name__}, got {value!r:.40}")

    return structure


@lru_cache(maxsize=1)
def converter() -> cattrs.Converter:
    """The SDK's converter (built once; thread-safe to use)."""
    import cattrs

    conv = cattrs.Converter(forbid_extra_keys=False)
    conv.register_unstructure_hook(uuid.UUID, str)
    conv.register_unstructure_hook(datetime, format_timestamp)
    conv.register_unstructure_hook_func(
        lambda kind: kind == tuple[QualityGate, ...], lambda gates: [gate.value for gate in gates]
    )
    conv.register_structure_hook(Confidence | str, _structure_confidence)
    # On datetime, not datetime | None: cattrs < 24 structures Optional before any union hook.
    conv.register_structure_hook(datetime, _structure_datetime)
    for kind in (int, float, str, bool):
        conv.register_structure_hook(kind, _strict_scalar(kind))
    return conv


def structure_errors(exc: BaseException, path: str) -> str:
    """One readable line for a failed ``structure`` (cattrs' ``transform_error`` when it can)."""
    import cattrs

    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc, path=path))
    return str(exc)
