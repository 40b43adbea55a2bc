"""Event JSON: the exact text stored in the outbox and sent, and reading a wire dict back.

``event_to_json`` is on the ``track()`` hot path, so it is a function generated once from the
model's fields (one f-string, an expression per field, as attrs and cattrs generate their
code) that writes exactly what ``json.dumps`` makes of ``event_to_dict`` (a Hypothesis test
holds them equal). ``event_to_dict`` goes through the SDK's one cattrs converter.
"""

from __future__ import annotations

import json
import types
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from functools import lru_cache
from json.encoder import encode_basestring  # what json.dumps(..., ensure_ascii=False) uses
from typing import Any

from .._event_rules import EVENT_FIELDS, check_event_fields, coerce_event_fields
from .._exceptions import EventValidationError
from .._models import TaskCompletionEvent
from .convert import converter, format_timestamp
from .http import KEY_EVENTS

__all__ = ["batch_body", "event_from_dict", "event_id_and_json", "event_to_dict", "event_to_json"]


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
    return event_id_and_json(event)[1]


def event_id_and_json(event: TaskCompletionEvent) -> tuple[str, str]:
    """``(str(event.event_id), event_to_json(event))``, the id text made once for both."""
    try:
        return _event_writer()(event)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # The slow path, only for an event the writer's exact-type guard refused: name the
        # bad field(s) and the rule, or write a valid event of unusual types (a UUID
        # subclass) the way the writer is defined.
        values = {name: getattr(event, name, None) for name in EVENT_FIELDS}
        problems = check_event_fields(values)
        if problems:
            raise EventValidationError(problems) from exc
        text = json.dumps(event_to_dict(event), separators=(",", ":"), ensure_ascii=False)
        return str(event.event_id), text


#: How a value of each scalar type is written as JSON, as ``(guard, expression)`` around
#: ``{v}``: the writer checks every guard first (exact types, finite floats), so each
#: expression is written by the f-string itself, with no call where none is needed.
_JSON_WRITERS: dict[Any, tuple[str | None, str]] = {
    uuid.UUID: ("type({v}) is UUID", '"{{v}}"'),  # hex digits and dashes: nothing to escape
    # digits, '-', ':', '.', 'T', 'Z'; format_timestamp converts any aware time to UTC
    datetime: (
        "type({v}) is datetime and {v}.tzinfo is not None",
        '"{format_timestamp({v})}"',
    ),
    bool: ("type({v}) is bool", "{('true' if {v} else 'false')}"),
    int: ("type({v}) is int", "{{v}}"),  # an exact int formats as json.dumps writes it
    float: ("type({v}) is float and {v} - {v} == 0.0", "{{v}!r}"),  # NaN and inf fail the guard
    str: (None, "{encode_basestring({v})}"),  # which raises TypeError for a non-str
}


def _json_writer(kind: Any, value: str, env: dict[str, Any]) -> tuple[str | None, str]:
    """``(guard, f-string part)`` writing ``value`` (an expression of type ``kind``) as JSON.

    A guard is a Python expression, None when the part itself raises on a wrong type."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [k for k in typing.get_args(kind) if k is not type(None)]
        guard, part = _json_writer(inner, value, env)
        if not (part.startswith("{") and part.endswith("}") and part.count("{") == 1):
            raise TypeError(f"no JSON writer for {kind!r}")
        return (
            None if guard is None else f"({value} is None or ({guard}))",
            f"{{'null' if {value} is None else {part[1:-1]}}}",
        )
    if origin is tuple:
        item_guard, item = _json_writer(typing.get_args(kind)[0], "item", env)
        if item_guard is not None or not (item.startswith("{") and item.count("{") == 1):
            raise TypeError(f"no JSON writer for {kind!r}")
        return (
            f"type({value}) is tuple",
            f"[{{','.join([{item[1:-1]} for item in {value}])}}]",
        )
    if isinstance(kind, type) and issubclass(kind, Enum):
        table = f"_json_{kind.__name__}"
        env[table] = {member: encode_basestring(member.value) for member in kind}
        return None, f"{{{table}[{value}]}}"  # a KeyError for anything else
    if kind not in _JSON_WRITERS:
        raise TypeError(f"no JSON writer for {kind!r}")
    guard, part = _JSON_WRITERS[kind]
    return (None if guard is None else guard.replace("{v}", value)), part.replace("{v}", value)


@lru_cache(maxsize=1)
def _event_writer() -> Callable[[TaskCompletionEvent], tuple[str, str]]:
    """``event -> (event id text, JSON text)``, generated from the model's fields on first use.

    A field of a type without a writer fails here, at the first ``track()`` (and in the
    tests), never silently.
    """
    import attrs

    env: dict[str, Any] = {
        "UUID": uuid.UUID,
        "datetime": datetime,
        "encode_basestring": encode_basestring,
        "format_timestamp": format_timestamp,
        "instance_text": [(None, "")],  # (UUID, its text); a tuple is swapped atomically
    }
    kinds = typing.get_type_hints(TaskCompletionEvent)
    guards, parts = [], []
    for field in attrs.fields(TaskCompletionEvent):
        guard, part = _json_writer(kinds[field.name], f"e.{field.name}", env)
        if field.name in ("event_id", "instance_id"):
            part = part.replace(f"e.{field.name}", field.name)  # texts made below
        if guard is not None:
            guards.append(guard)
        parts.append(json.dumps(field.name) + ":" + part)
    source = (
        "def event_writer(e):\n"
        f"    if not ({' and '.join(guards)}):\n"
        "        raise TypeError('a field is not of its exact type, or not a finite number')\n"
        # The event id text is returned too (track() stores it beside the JSON); the last
        # instance id's text is kept: the builder hands out one UUID object per instance id.
        "    last = instance_text[0]\n"
        "    if e.instance_id is last[0]:\n"
        "        instance_id = last[1]\n"
        "    else:\n"
        "        instance_id = str(e.instance_id)\n"
        "        instance_text[0] = (e.instance_id, instance_id)\n"
        "    event_id = str(e.event_id)\n"
        f"    return event_id, f'''{{{{{','.join(parts)}}}}}'''\n"
    )
    code = compile(source, "<generated mosaic_telemetry._wire.events.event_writer>", "exec")
    exec(code, env)  # noqa: S102 - our own generated code, from the model's field types
    writer: Callable[[TaskCompletionEvent], tuple[str, str]] = env["event_writer"]
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
