"""The SDK's own transport: one HTTP exchange through ``requests``, bounded in size and time.

``RequestsTransport`` owns a ``requests.Session`` (created on first use; a fresh one after
``fork``) and maps everything requests and urllib3 can throw to ``TransportError`` at the
boundary. No reply is trusted: at most ``MAX_REPLY_BYTES`` are read, within a total deadline
of about the request's timeout. The request's headers (with the API key) live in the request
only: never in ``repr``, results, log lines or exceptions.

``requests`` (about 100 ms to import) is loaded by the first request, never by
``import mosaic_telemetry``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import TYPE_CHECKING

from .. import _forksafe
from .._exceptions import TransportError
from .._log import logger
from .._secrets import redact
from .._wire.http import MAX_REPLY_BYTES
from .seam import Headers, TransportRequest, TransportResponse

if TYPE_CHECKING:
    import requests

__all__ = ["RequestsTransport"]

_READ_SIZE = 64 * 1024
_DETAIL_CHARS = 300


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


class RequestsTransport:
    """Sends requests with ``requests``; ``verify`` checks TLS certificates (on by default)."""

    def __init__(self, *, verify: bool = True) -> None:
        # Loaded now, on the thread that builds the transport: never on the worker thread, where
        # a fork in the middle of the import would leave the child a half-initialised module.
        import http.client  # noqa: F401

        import requests  # noqa: F401
        import urllib3  # noqa: F401

        self._verify = verify
        self._session: requests.Session | None = None
        self._session_pid = 0
        self._lock = threading.Lock()
        _forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # the session is replaced by the pid check

    def __repr__(self) -> str:
        return f"RequestsTransport(verify={self._verify!r})"

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

    def handle_request(self, request: TransportRequest) -> TransportResponse:
        """One exchange within about ``request.timeout``; raises TransportError without a reply."""
        import http.client

        import requests
        import urllib3

        try:
            return self._exchange(request)
        except (
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
        ) as exc:
            text = " ".join(str(exc).split())
            detail = redact(f"{type(exc).__name__}: {text}")[:_DETAIL_CHARS]
            raise TransportError(detail) from exc

    def _exchange(self, request: TransportRequest) -> TransportResponse:
        session = self._get_session()
        timeout = request.timeout
        started = time.monotonic()
        response = session.request(
            request.method,
            request.url,
            data=request.content,
            headers=dict(request.headers.items()),
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
            content = self._read_capped(response, deadline)
            return TransportResponse(
                status_code=response.status_code,
                headers=Headers(dict(response.headers.items())),
                content=content,
            )
        finally:
            response.close()  # an unread rest closes the connection instead of draining it

    @staticmethod
    def _read_capped(response: requests.Response, deadline: float) -> bytes:
        """Read at most MAX_REPLY_BYTES before ``deadline`` (what arrived by then, if less)."""
        import http.client

        import urllib3

        # read1 does one socket read per call, each bounded by the time left, so a server
        # trickling bytes cannot stretch the exchange (iter_content's read() fills whole
        # chunks and would reset the read timeout on every byte).
        chunks: list[bytes] = []
        size = 0
        limit = MAX_REPLY_BYTES
        try:
            while size <= limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                _set_socket_timeout(response, remaining)
                chunk = response.raw.read1(min(_READ_SIZE, limit + 1 - size), decode_content=True)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            logger.debug("reply body cut short: %s", type(exc).__name__)
        return b"".join(chunks)[:limit]
