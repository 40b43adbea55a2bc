"""Reading a request body for the fake server: Content-Length or chunked, gzip, size limits.

A body that is too large is read and thrown away when that is cheap, so the client gets its 413
instead of a reset while it is still sending; a body whose end cannot be found closes the
connection (``BodyError.close``).
"""

from __future__ import annotations

import zlib
from email.message import Message
from io import BufferedIOBase

__all__ = ["BodyError", "gunzip", "read_body"]

#: A body above ``max_bytes`` but below this is read and discarded so the client gets
#: the 413 instead of a reset while it is still sending; a larger one closes the connection.
_DRAIN_LIMIT = 64 << 20


class BodyError(Exception):
    """The request body cannot be read: answer ``status``; ``close`` the connection after."""

    def __init__(self, status: int, detail: str, *, close: bool = False) -> None:
        super().__init__(detail)
        self.status, self.detail, self.close = status, detail, close


def gunzip(raw: bytes, max_bytes: int) -> bytes:
    """Decompress a gzip body of at most ``max_bytes`` (a bomb is a 413, garbage a 400)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise BodyError(400, f"invalid gzip body: {exc}") from None
    if len(data) > max_bytes:
        raise BodyError(413, f"decompressed body exceeds the limit of {max_bytes} bytes")
    if not inflater.eof:
        raise BodyError(400, "invalid gzip body: truncated")
    return data


def read_body(rfile: BufferedIOBase, headers: Message, max_bytes: int) -> bytes:
    """The body of a request whose ``headers`` were read from ``rfile``, decompressed.

    Raises :class:`BodyError` when it cannot be read or exceeds ``max_bytes``.
    """
    transfer = headers.get("Transfer-Encoding", "").strip().lower()
    if transfer:
        if transfer != "chunked":
            raise BodyError(400, f"unsupported Transfer-Encoding {transfer!r}", close=True)
        raw = _read_chunked(rfile, max_bytes)
    else:
        try:
            length = int(headers.get("Content-Length", "0"))
            if length < 0:
                raise ValueError(length)
        except ValueError:
            raise BodyError(400, "invalid Content-Length", close=True) from None
        if length > max_bytes:
            _discard(rfile, length)
            raise BodyError(413, f"body of {length} bytes exceeds the limit of {max_bytes}")
        raw = rfile.read(length)
        if len(raw) < length:
            raise BodyError(400, "body shorter than its Content-Length", close=True)
    encoding = headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding == "gzip":
        return gunzip(raw, max_bytes)
    raise BodyError(415, f"unsupported Content-Encoding {encoding!r}")


def _discard(rfile: BufferedIOBase, length: int) -> None:
    if length > _DRAIN_LIMIT:
        raise BodyError(413, f"body of {length} bytes is far too large", close=True)
    while length > 0:
        chunk = rfile.read(min(length, 1 << 16))
        if not chunk:
            break
        length -= len(chunk)


def _read_chunked(rfile: BufferedIOBase, max_bytes: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = rfile.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BodyError(400, "malformed chunked body", close=True) from None
        if size == 0:
            break
        total += size
        if total > _DRAIN_LIMIT:
            raise BodyError(413, "chunked body is far too large", close=True)
        data = rfile.read(size)
        if len(data) < size:
            raise BodyError(400, "truncated chunked body", close=True)
        if total <= max_bytes:
            parts.append(data)
        rfile.readline(1024)  # the CRLF after the chunk
    while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
        pass  # trailers
    if total > max_bytes:
        raise BodyError(413, f"body of {total} bytes exceeds the limit of {max_bytes}")
    return b"".join(parts)
