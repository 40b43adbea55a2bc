"""The transport seam: one method, ``handle_request(request) -> response``.

Like httpx's transports, a transport knows HTTP and nothing of telemetry: it takes a
:class:`TransportRequest` (method, URL, headers, body, a deadline for the whole exchange) and
returns a :class:`TransportResponse` (status, headers, body), or raises
:class:`~mosaic_telemetry.TransportError` when no reply could be had (connection refused,
timeout, reset). Everything wire-v1 says about replies (verdicts, 422 indices, Retry-After,
redaction of echoed keys) is decided above the seam, by ``_wire``, for every transport alike.

The SDK's own transport is :class:`~mosaic_telemetry._delivery.transport.RequestsTransport`;
``mosaic_telemetry.testing.MockTransport`` wraps a function, for tests without sockets.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = ["Headers", "Transport", "TransportRequest", "TransportResponse"]


class Headers(Mapping[str, str]):
    """Read-only HTTP headers, looked up case-insensitively (``headers["retry-after"]``)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, tuple[str, str]] = {
            str(name).lower(): (str(name), str(value)) for name, value in (items or {}).items()
        }

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(Headers(other).items())

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items)))

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


def _headers(value: Mapping[str, str] | None) -> Headers:
    return value if isinstance(value, Headers) else Headers(value)


def _decode_json(content: bytes, headers: Headers) -> Any:
    if headers.get("Content-Encoding", "").lower() == "gzip":
        content = gzip.decompress(content)
    return json.loads(content)


@attrs.frozen(kw_only=True)
class TransportRequest:
    """One HTTP request the SDK wants sent; ``timeout`` bounds the whole exchange (seconds)."""

    method: str
    url: str
    headers: Headers = attrs.field(converter=_headers, factory=Headers)
    content: bytes = b""
    timeout: float = 10.0

    def json(self) -> Any:
        """The body as JSON (gunzipped first when ``Content-Encoding: gzip``)."""
        return _decode_json(self.content, self.headers)


@attrs.frozen(kw_only=True)
class TransportResponse:
    """The server's reply: status, headers and (possibly capped) body bytes."""

    status_code: int
    headers: Headers = attrs.field(converter=_headers, factory=Headers)
    content: bytes = b""

    @classmethod
    def from_json(
        cls, status_code: int, body: Any, *, headers: Mapping[str, str] | None = None
    ) -> TransportResponse:
        """A reply whose body is ``body`` as JSON (``Content-Type: application/json``)."""
        merged = {"Content-Type": "application/json", **(headers or {})}
        return cls(status_code=status_code, headers=merged, content=json.dumps(body).encode())

    def json(self) -> Any:
        """The body as JSON; raises ValueError when it is not."""
        return _decode_json(self.content, self.headers)


@runtime_checkable
class Transport(Protocol):
    """What the SDK needs of a transport: send one request, get one reply (or TransportError).

    ``close()`` is optional: the client calls it when it stops, if the transport has one.
    """

    def handle_request(self, request: TransportRequest) -> TransportResponse: ...
