"""The SDK's own transport: one HTTP exchange through ``requests``, bounded in size and time.

``RequestsTransport`` owns a ``requests.Session`` (created on first use; a fresh one after
``fork``) and maps everything requests and urllib3 can throw to ``TransportError`` at the
boundary. No reply is trusted: at most ``MAX_REPLY_BYTES`` are read, and one deadline bounds
the whole exchange (connect, TLS handshake, send, reply head: ``request.timeout``; the body:
a short grace after the head), enforced on every socket operation by the session's
connections (:mod:`.deadline`), so a server trickling its reply cannot stretch it. The
request's headers (with the API key) live in the request only: never in ``repr``, results,
log lines or exceptions.

``requests`` (about 100 ms to import) is loaded by the first request, never by
``import mosaic_telemetry``.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import _forksafe
from .._exceptions import TransportError
from .._log import logger
from .._secrets import redact
from .._wire.http import MAX_REPLY_BYTES
from .seam import Headers, TransportRequest, TransportResponse

if TYPE_CHECKING:
    import requests
    import requests.adapters

__all__ = ["RequestsTransport", "body_grace"]

_READ_SIZE = 64 * 1024
_DETAIL_CHARS = 300


def body_grace(timeout: float) -> float:
    """Seconds a reply whose head came in time still gets for its (normally tiny) body."""
    return min(1.0, timeout / 4)


def _keep_headers(request: requests.PreparedRequest) -> requests.PreparedRequest:
    # An explicit no-op auth: with ``auth=None`` requests would take credentials from
    # ~/.netrc or from userinfo in the URL and overwrite our Authorization header (or add
    # one to the public predictions call). Reproduce: a ~/.netrc entry for the server host.
    return request


@functools.cache
def _adapter_class() -> type[requests.adapters.HTTPAdapter]:
    """requests' adapter, with pools (direct and through an http proxy) of deadline sockets."""
    import requests.adapters

    from . import deadline

    class DeadlineAdapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            deadline.bound_pools(self.poolmanager)

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            return deadline.bound_pools(super().proxy_manager_for(proxy, **kwargs))

    return DeadlineAdapter


class RequestsTransport:
    """Sends requests with ``requests``; ``verify`` checks TLS certificates (on by default)."""

    def __init__(self, *, verify: bool = True) -> None:
        # Loaded now, on the thread that builds the transport: never on the worker thread, where
        # a fork in the middle of the import would leave the child a half-initialised module.
        import http.client  # noqa: F401

        import requests  # noqa: F401
        import urllib3  # noqa: F401

        from . import deadline  # noqa: F401

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
                session = requests.Session()
                adapter = _adapter_class()
                session.mount("https://", adapter())
                session.mount("http://", adapter())
                self._session = session
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
        from . import deadline

        session = self._get_session()
        timeout = request.timeout
        with deadline.bounded(time.monotonic() + timeout):
            response = session.request(
                request.method,
                request.url,
                data=request.content,
                headers=dict(request.headers.items()),
                timeout=(timeout, timeout),  # each socket operation gets what is left, no more
                allow_redirects=False,
                stream=True,
                verify=self._verify,
                auth=_keep_headers,
            )
            try:
                # The head came in time; the body gets a short grace on top if it needs it.
                deadline.extend(time.monotonic() + body_grace(timeout))
                content = self._read_capped(response)
                return TransportResponse(
                    status_code=response.status_code,
                    headers=Headers(dict(response.headers.items())),
                    content=content,
                )
            finally:
                response.close()  # an unread rest closes the connection instead of draining it

    @staticmethod
    def _read_capped(response: requests.Response) -> bytes:
        """Read at most MAX_REPLY_BYTES before the deadline (what arrived by then, if less)."""
        import http.client

        import urllib3

        chunks: list[bytes] = []
        size = 0
        limit = MAX_REPLY_BYTES
        try:
            while size <= limit:
                chunk = response.raw.read(min(_READ_SIZE, limit + 1 - size), decode_content=True)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
            logger.debug("reply body cut short: %s", type(exc).__name__)
        return b"".join(chunks)[:limit]
