"""Event JSON: the exact text stored in the outbox and sent, and reading a wire dict back.

``event_to_json`` is on the ``track()`` hot path, so it is a function generated once from the
model's fields (one f-string, an expression per field, as attrs and cattrs generate their
code) that writes exactly what ``json.dumps`` makes of ``event_to_dict`` (a Hypothesis test
holds them equal). ``event_to_dict`` goes through the SDK's one cattrs converter.
"""

from __future__ import annotations

import json
import math
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from functools import lru_cache
from json.encoder import encode_basestring  # what json.dumps(..., ensure_ascii=False) uses
from typing import Any

from .._exceptions import EventValidationError
from .._models import EVENT_FIELDS, TaskCompletionEvent, check_event_fields, coerce_event_fields
from .convert import converter, format_timestamp
from .http import KEY_EVENTS

__all__ = ["batch_body", "event_from_dict", "event_to_dict", "event_to_json"]


def event_to_dict(event: TaskCompletionEvent) -> dict[str, Any]:
    """The wire dict of ``event``: exactly the keys of schema 1.0, in order."""
    result: dict[str, Any] = converter().unstructure(event)
    return result


def event_to_json(event: TaskCompletionEvent) -> str:
    """The compact JSON text stored in the outbox and sent as is.

    Exactly ``json.dumps(event_to_dict(event), separators=(",", ":"), ensure_ascii=False)``.
    Raises EventValidationError naming the field for a value JSON cannot carry (NaN, infinity)
    or of the wrong type, which a frozen event can only hold when someone bypassed its
    validation (``object.__setattr__``).
    """
    try:
        return _event_json_writer()(event)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # The slow path, only for a broken event: name the field(s) and the rule.
        values = {name: getattr(event, name, None) for name in EVENT_FIELDS}
        problems = check_event_fields(values)
        if problems:
            raise EventValidationError(problems) from exc
        raise


def _finite_float(value: float) -> str:
    if type(value) is not float or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite JSON number")
    return float.__repr__(value)


def _exact_int(value: int) -> str:
    if type(value) is not int:  # a bool or a float put into an int field after validation
        raise ValueError(f"{value!r} is not an integer")
    return int.__repr__(value)


def _uuid_text(value: uuid.UUID) -> str:
    if type(value) is not uuid.UUID:
        raise ValueError(f"{value!r:.40} is not a UUID")
    return '"' + str(value) + '"'  # hex digits and dashes: nothing to escape


#: How a value of each scalar type is written as JSON: a Python expression around ``{v}``.
_JSON_WRITERS: dict[Any, str] = {
    uuid.UUID: "uuid_text({v})",
    datetime: "'\"' + format_timestamp({v}) + '\"'",  # digits, '-', ':', '.', 'T', 'Z'
    bool: "('true' if {v} else 'false')",
    int: "int_repr({v})",  # as json.dumps writes an int; a bool or float raises
    float: "float_repr({v})",  # as json.dumps writes a finite float; NaN/inf raise
    str: "encode_basestring({v})",
}


def _json_expression(kind: Any, value: str, env: dict[str, Any]) -> str:
    """A Python expression that writes ``value`` (an expression of type ``kind``) as JSON."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [k for k in typing.get_args(kind) if k is not type(None)]
        return f"('null' if {value} is None else {_json_expression(inner, value, env)})"
    if origin is tuple:
        item = _json_expression(typing.get_args(kind)[0], "item", env)
        return f"'[' + ','.join([{item} for item in {value}]) + ']'"
    if isinstance(kind, type) and issubclass(kind, Enum):
        table = f"_json_{kind.__name__}"
        env[table] = {member: encode_basestring(member.value) for member in kind}
        return f"{table}[{value}]"
    if kind not in _JSON_WRITERS:
        raise TypeError(f"no JSON writer for {kind!r}")
    return _JSON_WRITERS[kind].format(v=value)


@lru_cache(maxsize=1)
def _event_json_writer() -> Callable[[TaskCompletionEvent], str]:
    """``event -> JSON text``, generated from the model's fields on first use.

    A field of a type without a writer fails here, at the first ``track()`` (and in the
    tests), never silently.
    """
    import attrs

    env: dict[str, Any] = {
        "encode_basestring": encode_basestring,
        "format_timestamp": format_timestamp,
        "int_repr": _exact_int,
        "uuid_text": _uuid_text,
        "float_repr": _finite_float,
    }
    kinds = typing.get_type_hints(TaskCompletionEvent)
    parts = [
        f"{json.dumps(f.name)}:{{{_json_expression(kinds[f.name], f'e.{f.name}', env)}}}"
        for f in attrs.fields(TaskCompletionEvent)
    ]
    source = f"def event_json(e):\n    return f'''{{{{{','.join(parts)}}}}}'''\n"
    exec(source, env)  # noqa: S102 - our own generated code, from the model's field types
    writer: Callable[[TaskCompletionEvent], str] = env["event_json"]
    return writer


def event_from_dict(data: Mapping[str, Any]) -> TaskCompletionEvent:
    """Read a wire dict back into an event; raises EventValidationError naming every field."""
    if not isinstance(data, Mapping):
        raise EventValidationError([f"event: must be a JSON object, got {type(data).__name__}"])
    values = {name: data[name] for name in data if name in EVENT_FIELDS}
    problems = coerce_event_fields(values)
    unreadable = {p.split(":", 1)[0] for p in problems}
    problems += [p for p in check_event_fields(values) if p.split(":", 1)[0] not in unreadable]
    problems += [f"{name}: required" for name in EVENT_FIELDS if name not in data]
    problems += [f"{name}: unknown key" for name in data if name not in EVENT_FIELDS]
    if problems:
        raise EventValidationError(problems)
    return TaskCompletionEvent(**values)


def batch_body(event_texts: Sequence[str]) -> bytes:
    """The request body of an events batch, built from stored JSON texts without re-encoding."""
    return ('{"' + KEY_EVENTS + '":[' + ",".join(event_texts) + "]}").encode("utf-8")
