"""Tests of mosaic_telemetry.testing.bodies: request bodies read from a stream, no sockets."""

from __future__ import annotations

import gzip
import io
from email.message import Message

import pytest

from mosaic_telemetry.testing.bodies import BodyError, read_body


def headers(**values: str) -> Message:
    """Request headers as http.server parses them (names with dashes for underscores)."""
    message = Message()
    for name, value in values.items():
        message[name.replace("_", "-")] = value
    return message


def read(raw: bytes, max_bytes: int = 1000, **values: str) -> tuple[bytes, bytes]:
    """The body read from ``raw`` and what is left on the stream after it."""
    stream = io.BytesIO(raw)
    body = read_body(stream, headers(**values), max_bytes)
    return body, stream.read()


def refused(raw: bytes, values: dict[str, str], max_bytes: int = 1000) -> BodyError:
    """The BodyError reading ``raw`` with header ``values`` raises."""
    with pytest.raises(BodyError) as caught:
        read_body(io.BytesIO(raw), headers(**values), max_bytes)
    return caught.value


def test_content_length_body_is_read_exactly() -> None:
    """Exactly Content-Length bytes are read; the next request stays on the stream."""
    assert read(b"helloNEXT", Content_Length="5") == (b"hello", b"NEXT")
    assert read(b"NEXT") == (b"", b"NEXT")  # no Content-Length: no body


def test_chunked_body_with_extensions_and_trailers() -> None:
    """Chunks (with extensions) are joined; trailers are skipped up to the blank line."""
    raw = b"4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT"

    assert read(raw, Transfer_Encoding="chunked") == (b"wikipedia", b"NEXT")


def test_gzip_is_decompressed_and_identity_passes() -> None:
    """Content-Encoding gzip is inflated; identity is the body as sent."""
    zipped = gzip.compress(b"plain")

    assert read(zipped, Content_Length=str(len(zipped)), Content_Encoding="gzip")[0] == b"plain"
    assert read(b"as is", Content_Length="5", Content_Encoding="identity")[0] == b"as is"


def test_too_long_body_is_drained_so_the_connection_stays_usable() -> None:
    """A body over the limit is a 413 that keeps the connection: its bytes are consumed."""
    stream = io.BytesIO(b"x" * 2000 + b"NEXT")

    with pytest.raises(BodyError) as caught:
        read_body(stream, headers(Content_Length="2000"), 1000)

    assert (caught.value.status, caught.value.close) == (413, False)
    assert stream.read() == b"NEXT"


@pytest.mark.parametrize(
    ("raw", "values", "status", "close"),
    [
        (b"", {"Content_Length": str(100 << 20)}, 413, True),  # far too large to drain
        (b"abc", {"Content_Length": "10"}, 400, True),  # shorter than announced
        (b"", {"Content_Length": "-1"}, 400, True),
        (b"", {"Content_Length": "ten"}, 400, True),
        (b"", {"Transfer_Encoding": "gzip"}, 400, True),
        (b"zz\r\n", {"Transfer_Encoding": "chunked"}, 400, True),
        (b"10\r\nabc", {"Transfer_Encoding": "chunked"}, 400, True),  # truncated chunk
        (b"800\r\n" + b"x" * 2048 + b"\r\n0\r\n\r\n", {"Transfer_Encoding": "chunked"}, 413, False),
        (gzip.compress(b"x" * 2000), {"Content_Encoding": "gzip"}, 413, False),  # a bomb
        (b"not gzip", {"Content_Encoding": "gzip"}, 400, False),
        (gzip.compress(b"x" * 100)[:-12], {"Content_Encoding": "gzip"}, 400, False),
        (b"data", {"Content_Encoding": "br"}, 415, False),
    ],
    ids=[
        "far-too-large",
        "short",
        "negative-length",
        "bad-length",
        "bad-transfer",
        "bad-chunk-size",
        "truncated-chunk",
        "chunked-too-large",
        "gzip-bomb",
        "not-gzip",
        "truncated-gzip",
        "unknown-encoding",
    ],
)
def test_unreadable_bodies_name_status_and_whether_to_close(
    raw: bytes, values: dict[str, str], status: int, close: bool
) -> None:
    """Each unreadable body is a BodyError with the status to answer and if the framing is lost."""
    if "Content_Encoding" in values:
        values = {**values, "Content_Length": str(len(raw))}

    error = refused(raw, values)

    assert (error.status, error.close) == (status, close)
    assert error.detail
