"""The records a test exchanges with the fake server: scripted replies in, recorded requests out."""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import attrs

from . import oracle

__all__ = [
    "PARSE_BODY",
    "Faults",
    "RecordedRequest",
    "ScriptedReply",
    "scripted_body",
    "stores_events",
]


def _copy_mapping(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


@attrs.frozen(kw_only=True)
class ScriptedReply:
    """One scripted answer to the next request of an endpoint (see ``FakeTelemetryServer.script``).

    ``body=None`` means the normal body for ``status``: for a 2xx the real verdicts (and the
    events are stored as usual), for 422 the real validation errors, else ``{"detail": ...}``.
    ``store=True`` also stores the events for a non-2xx reply, a custom body, ``drop`` or
    ``hang`` (the server kept them, the reply was lost). Processing and recording happen
    before ``delay``/``drop``/``hang``. ``cut_after=N`` sends only the first N bytes of the
    reply (status line, headers, body) and then resets the connection: a reset mid-response.
    """

    status: int = attrs.field(
        default=202,
        validator=[attrs.validators.instance_of(int), attrs.validators.in_(range(200, 600))],
    )
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_copy_mapping)
    body: bytes | str | Mapping[str, Any] | list[Any] | None = None
    delay: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    drop: bool = False
    hang: bool = False
    store: bool = False
    cut_after: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(0))
    )

    def __attrs_post_init__(self) -> None:
        if self.drop and self.hang:
            raise ValueError("ScriptedReply: drop and hang exclude each other")
        if self.cut_after is not None and (self.drop or self.hang):
            raise ValueError("ScriptedReply: cut_after excludes drop and hang")


@attrs.frozen
class RecordedRequest:
    """One request the server received, with what it answered.

    ``headers`` look up case-insensitively; ``body`` is decompressed (``b""`` when it was
    refused for its size); ``json`` is None unless the body is JSON; ``status`` is 0 when the
    connection was dropped or left hanging; ``at`` is ``time.monotonic()`` on arrival;
    ``reply`` is the body the server sent (or would have sent, when it dropped the reply).
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    # Given as ``json=`` (attrs drops the underscore). The server passes PARSE_BODY: the body
    # is read on first access, so a recorded request keeps no parsed objects alive. Kept, they
    # doubled what the garbage collector walked (benchmarks/fake_server.py: 60 % of GC time).
    _json: Any = attrs.field(eq=False, repr=False)
    status: int
    at: float
    reply: bytes = attrs.field(default=b"", repr=False)

    @property
    def json(self) -> Any:
        """The body as JSON (parsed once, on first access), or None when it is not JSON."""
        if self._json is PARSE_BODY:
            try:
                parsed = json.loads(self.body)
            except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                parsed = None
            object.__setattr__(self, "_json", parsed)  # a cache on a frozen record
        return self._json


#: ``RecordedRequest(json=PARSE_BODY)``: parse ``body`` when ``json`` is first read.
PARSE_BODY: Any = type("ParseBody", (), {"__repr__": lambda self: "PARSE_BODY"})()


class Faults:
    """Faults for the requests no script answers: each reply waits ``latency`` seconds, and a
    ``fail_rate`` share of events batches gets a 503 (with ``Retry-After: retry_after`` when
    given) and is not stored; ``random.Random(seed)`` decides which, so a seed repeats a run.
    Thread-safe."""

    def __init__(
        self,
        latency: float = 0.0,
        fail_rate: float = 0.0,
        seed: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        if not (isinstance(latency, (int, float)) and math.isfinite(latency) and latency >= 0):
            raise ValueError(f"latency must be a number of seconds, 0 or more, got {latency!r}")
        if not (isinstance(fail_rate, (int, float)) and 0.0 <= fail_rate <= 1.0):
            raise ValueError(f"fail_rate must be a share between 0 and 1, got {fail_rate!r}")
        if retry_after is not None and not (isinstance(retry_after, int) and retry_after >= 0):
            raise ValueError(f"retry_after must be whole seconds, 0 or more, got {retry_after!r}")
        self.latency = float(latency)
        self._fail_rate = float(fail_rate)
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        self._failure = ScriptedReply(
            status=503, headers=headers, body={"detail": "simulated failure (fail_rate)"}
        )
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self, path: str) -> ScriptedReply | None:
        """The simulated failure for this request, or None to answer it normally."""
        if path != oracle.EVENTS_PATH or self._fail_rate == 0.0:
            return None
        with self._lock:
            failed = self._random.random() < self._fail_rate
        return self._failure if failed else None


def _is_2xx(status: int) -> bool:
    return 200 <= status < 300


def stores_events(script: ScriptedReply | None) -> bool:
    """Whether a request answered by ``script`` (None: normally) stores its valid events."""
    if script is None or script.store:
        return True
    unanswered = script.drop or script.hang or script.cut_after is not None
    return _is_2xx(script.status) and script.body is None and not unanswered


def scripted_body(script: ScriptedReply, normal: oracle.Reply, path: str) -> Any:
    """The body ``script`` sends, given the reply the server would have sent for ``path``."""
    if script.body is not None:
        return script.body
    if _is_2xx(script.status):
        return normal.body if _is_2xx(normal.status) else oracle.empty_verdicts(path)
    if script.status == 422 and path == oracle.EVENTS_PATH:
        return {"detail": normal.invalid}
    try:
        phrase = HTTPStatus(script.status).phrase
    except ValueError:
        phrase = f"HTTP {script.status}"
    return {"detail": f"{phrase} (scripted)"}
