"""HTTP to the Telemetry API: one POST in, one classified ``SendResult`` out.

``Transport`` owns a ``requests.Session`` (created on first use, by the thread that sends; a
fresh one after ``fork``) and maps everything requests can throw at the boundary: sending
events never raises for HTTP or network trouble (the reply is classified per wire-v1 §1),
fetching predictions raises ``TransportError`` only. No reply is trusted: at most
``_codec.MAX_REPLY_BYTES`` are read, within a total deadline of about the timeout, and the
JSON is read leniently. The API key lives in the Authorization header and nowhere else:
not in ``repr``, results, log lines or exceptions.

``requests`` (≈100 ms to import) is loaded by the first request, never by
``import mosaic_telemetry``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from . import _codec
from ._config import is_loopback_host
from ._exceptions import TransportError
from ._log import RateLimitedLogger, logger
from ._version import get_version

if TYPE_CHECKING:
    import requests

    from ._models import PredictionQuery

__all__ = ["SendKind", "SendResult", "Transport"]

_READ_SIZE = 64 * 1024
_DETAIL_CHARS = 300
_REDACTED = "[api key]"


class SendKind(enum.Enum):
    """What the worker must do with a batch, from the server's reply (wire-v1 §1)."""

    OK = "ok"  # 2xx: apply the per-event verdicts
    RETRY = "retry"  # 429, 5xx, timeout, network error: back off, keep the events
    AUTH = "auth"  # 401/403: keep the events, pause
    TOO_LARGE = "too_large"  # 413: split the batch
    BAD_REQUEST = "bad_request"  # 400: never resend as is (split or dead-letter)
    INVALID = "invalid"  # 422: dead-letter the named indices, resend the rest (or bisect)
    CLIENT_ERROR = "client_error"  # 3xx and any other 4xx: not understood, keep the events


@attrs.frozen
class SendResult:
    """The classified outcome of one events POST."""

    kind: SendKind
    #: HTTP status; None when no reply was read (network error, timeout).
    status: int | None
    #: OK only: ``event_id -> (status, error)``; None when the reply had no readable results.
    verdicts: Mapping[str, tuple[str, str | None]] | None = None
    #: INVALID only: batch index -> reason; empty when no index could be read (bisect).
    invalid: Mapping[int, str] = attrs.field(factory=dict)
    #: RETRY only: seconds from Retry-After, clamped to the transport's cap.
    retry_after: float | None = None
    #: Short text for logs and dead letters; never contains the key.
    detail: str = ""


@attrs.frozen
class _Reply:
    status: int
    headers: Mapping[str, str]
    content: bytes
    complete: bool  # False: cut at the size cap or the deadline, or the read failed


def _keep_headers(request: requests.PreparedRequest) -> requests.PreparedRequest:
    # An explicit no-op auth: with ``auth=None`` requests would take credentials from
    # ~/.netrc or from userinfo in the URL and overwrite our Authorization header (or add
    # one to the public predictions call). Reproduce: a ~/.netrc entry for the server host.
    return request


def _set_socket_timeout(response: requests.Response, seconds: float) -> None:
    """Best effort: bound the next socket read by what is left of the total deadline."""
    # urllib3 2: a streamed reply holds its connection; a pooled or closed one has no socket.
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(max(seconds, 0.001))


def _load_json(content: bytes) -> tuple[bool, Any]:
    """(True, value) for a readable JSON body, (False, None) otherwise; never raises."""
    if not content.strip():
        return False, None
    try:
        return True, json.loads(content)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, deep nesting
        return False, None


class Transport:
    """Posts event batches and prediction queries to one server with one API key."""

    def __init__(
        self,
        server_url: str,
        api_key: str,
        *,
        timeout: float,
        verify: bool = True,
        gzip: bool = False,
        retry_after_cap: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base_url = server_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._verify = verify
        self._gzip = gzip
        self._retry_after_cap = retry_after_cap
        self._clock = clock
        self._session: requests.Session | None = None
        self._session_pid = 0
        self._lock = threading.Lock()
        self._warnings = RateLimitedLogger(300.0)
        parts = urlsplit(self._base_url)
        if api_key and parts.scheme == "http" and not is_loopback_host(parts.hostname):
            logger.warning(
                "server_url %s is plain http: the API key and events travel unencrypted; use https",
                self._display_url,
            )

    @property
    def _display_url(self) -> str:
        """The server URL without any userinfo (``user:pass@``)."""
        parts = urlsplit(self._base_url)
        if "@" not in parts.netloc:
            return self._base_url
        return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()

    def __repr__(self) -> str:
        return f"Transport(server_url={self._display_url!r}, timeout={self._timeout!r})"

    # --- lifecycle --------------------------------------------------------------------------
    def _get_session(self) -> requests.Session:
        import requests

        pid = os.getpid()
        with self._lock:
            if self._session is None or self._session_pid != pid:
                # After fork the parent's pooled sockets must not be shared: the child
                # abandons them (closing could disturb the parent's TLS state) and starts over.
                self._session = requests.Session()
                self._session_pid = pid
            return self._session

    def close(self) -> None:
        """Close the session's pooled connections; a later request opens a new session."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None and self._session_pid == os.getpid():
            session.close()

    # --- one exchange -----------------------------------------------------------------------
    def _post(self, path: str, body: bytes, headers: Mapping[str, str], timeout: float) -> _Reply:
        """POST and read a capped reply within about ``timeout``; raises requests/urllib3 errors."""
        session = self._get_session()
        started = time.monotonic()
        response = session.post(
            self._base_url + path,
            data=body,
            headers=dict(headers),
            timeout=(timeout, timeout),
            allow_redirects=False,
            stream=True,
            verify=self._verify,
            auth=_keep_headers,
        )
        try:
            # The whole exchange gets about ``timeout``; a reply whose head came late still
            # gets a short grace for its (normally tiny) body.
            deadline = max(started + timeout, time.monotonic() + min(1.0, timeout / 4))
            content, complete = self._read_capped(response, deadline)
            if self._api_key:  # a server echoing the key must not get it into details or logs
                content = content.replace(self._api_key.encode(), _REDACTED.encode())
            return _Reply(response.status_code, response.headers, content, complete)
        finally:
            response.close()  # an unread rest closes the connection instead of draining it

    @staticmethod
    def _read_capped(response: requests.Response, deadline: float) -> tuple[bytes, bool]:
        """Read at most MAX_REPLY_BYTES before ``deadline``; (content, complete)."""
        import http.client

        import urllib3

        # read1 does one socket read per call, each bounded by the time left, so a server
        # trickling bytes cannot stretch the exchange (iter_content's read() fills whole
        # chunks and would reset the read timeout on every byte).
        chunks: list[bytes] = []
        size = 0
        limit = _codec.MAX_REPLY_BYTES
        try:
            while size <= limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return b"".join(chunks), False
                _set_socket_timeout(response, remaining)
                chunk = response.raw.read1(min(_READ_SIZE, limit + 1 - size), decode_content=True)
                if not chunk:
                    return b"".join(chunks), True
                chunks.append(chunk)
                size += len(chunk)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            logger.debug("reply body cut short: %s", type(exc).__name__)
            return b"".join(chunks), False
        return b"".join(chunks)[:limit], False

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, _REDACTED)
        return text

    def _error_detail(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split())
        return self._redact(f"{type(exc).__name__}: {text}")[:_DETAIL_CHARS]

    @staticmethod
    def _reply_detail(reply: _Reply, payload: Any, readable: bool) -> str:
        if readable:
            text = _codec.parse_detail(payload)
        else:
            text = reply.content[:_DETAIL_CHARS].decode("utf-8", "replace")
        text = " ".join(text.split())[:_DETAIL_CHARS]
        return f"HTTP {reply.status}: {text}" if text else f"HTTP {reply.status}"

    # --- events -------------------------------------------------------------------------------
    def send_events(
        self, event_texts: Sequence[str], *, timeout: float | None = None
    ) -> SendResult:
        """POST a batch of stored event JSON texts; classify the reply. Never raises for I/O."""
        import http.client

        import requests
        import urllib3

        body = _codec.batch_body(event_texts)
        if self._gzip:
            import gzip

            body = gzip.compress(body, compresslevel=6, mtime=0)
        headers = _codec.event_headers(self._api_key, get_version(), gzip=self._gzip)
        logger.debug(
            "POST %s%s: %d events, %d bytes",
            self._display_url,
            _codec.EVENTS_PATH,
            len(event_texts),
            len(body),
        )
        try:
            reply = self._post(
                _codec.EVENTS_PATH, body, headers, self._timeout if timeout is None else timeout
            )
        except (
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
        ) as exc:
            detail = self._error_detail(exc)
            logger.debug("events POST failed: %s", detail)
            return SendResult(kind=SendKind.RETRY, status=None, detail=detail)
        return self._classify(reply, len(event_texts))

    def _classify(self, reply: _Reply, batch_len: int) -> SendResult:
        status = reply.status
        readable, payload = _load_json(reply.content)
        logger.debug(
            "events reply %d (%d bytes%s): %r",
            status,
            len(reply.content),
            "" if reply.complete else ", cut short",
            reply.content[:2000].decode("utf-8", "replace"),
        )
        if 200 <= status < 300:
            verdicts = _codec.parse_batch_results(payload) if readable else None
            # results absent means "all accepted"; not JSON, not an object, or results of the
            # wrong type is malformed: still accepted (the status says so), with a warning.
            malformed = not isinstance(payload, Mapping) or (
                _codec.KEY_RESULTS in payload and verdicts is None
            )
            if malformed and not (status == 204 and not reply.content):
                self._warnings.warning(
                    "malformed-2xx",
                    "server answered %d with an unreadable body (%d bytes%s); "
                    "counting the batch as accepted",
                    status,
                    len(reply.content),
                    "" if reply.complete else ", cut short",
                )
            return SendResult(kind=SendKind.OK, status=status, verdicts=verdicts)
        detail = self._reply_detail(reply, payload, readable)
        if status == 429 or 500 <= status < 600:
            from ._retry import parse_retry_after  # lazily: _retry loads tenacity

            retry_after = parse_retry_after(
                reply.headers.get(_codec.HEADER_RETRY_AFTER),
                now=self._clock(),
                cap=self._retry_after_cap,
            )
            return SendResult(
                kind=SendKind.RETRY, status=status, retry_after=retry_after, detail=detail
            )
        if status == 422:
            invalid = _codec.parse_invalid_indices(payload, batch_len) if readable else {}
            return SendResult(kind=SendKind.INVALID, status=status, invalid=invalid, detail=detail)
        kind = {
            400: SendKind.BAD_REQUEST,
            401: SendKind.AUTH,
            403: SendKind.AUTH,
            413: SendKind.TOO_LARGE,
        }.get(status, SendKind.CLIENT_ERROR)
        return SendResult(kind=kind, status=status, detail=detail)

    # --- predictions ----------------------------------------------------------------------------
    def post_predictions(
        self, queries: Sequence[PredictionQuery], *, timeout: float | None = None
    ) -> list[Any]:
        """POST prediction queries (public: no key sent); the raw ``results`` list.

        Raises TransportError on a network error, a non-2xx status or an unreadable reply.
        """
        import http.client

        import requests
        import urllib3

        body = _codec.predictions_body(queries)
        headers = _codec.prediction_headers(get_version())
        try:
            reply = self._post(
                _codec.PREDICTIONS_PATH,
                body,
                headers,
                self._timeout if timeout is None else timeout,
            )
        except (
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
        ) as exc:
            raise TransportError(f"predictions request failed: {self._error_detail(exc)}") from exc
        readable, payload = _load_json(reply.content) if reply.complete else (False, None)
        if not 200 <= reply.status < 300:
            raise TransportError(
                f"predictions request refused: {self._reply_detail(reply, payload, readable)}"
            )
        if not readable:
            raise TransportError(
                f"predictions reply unreadable (HTTP {reply.status}, {len(reply.content)} bytes"
                f"{'' if reply.complete else ', cut short'})"
            )
        return _codec.prediction_results(payload)
