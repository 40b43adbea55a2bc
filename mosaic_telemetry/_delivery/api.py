"""The Telemetry API over a transport: event batches in, classified ``SendResult`` out.

``TelemetryApi`` builds each request of wire-v1 (URL, headers, body, optional gzip), hands it
to the transport seam and classifies the reply with ``_wire.replies``. Sending events never
raises: no reply (a ``TransportError``, or anything a user's transport throws) is a RETRY.
Fetching predictions raises ``TransportError`` only. The API key goes into the Authorization
header and nowhere else; every text read from a reply is redacted.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from .._config import is_loopback_host
from .._exceptions import TransportError
from .._log import RateLimitedLogger, logger
from .._models import PredictionQuery
from .._secrets import redact
from .._version import get_version
from .._wire import http as wire
from .._wire.events import batch_body
from .._wire.predictions import prediction_results, predictions_body
from .._wire.replies import SendKind, SendResult, classify_events_reply, load_json, reply_detail
from .seam import Transport, TransportRequest, TransportResponse

__all__ = ["DryRunApi", "TelemetryApi", "display_url"]


def display_url(url: str) -> str:
    """``url`` without any userinfo (``user:pass@``), for logs and reprs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


class TelemetryApi:
    """Posts event batches and prediction queries to one server with one API key."""

    def __init__(
        self,
        server_url: str,
        api_key: str,
        *,
        transport: Transport,
        timeout: float,
        gzip: bool = False,
        retry_after_cap: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base_url = server_url.rstrip("/")
        self._api_key = api_key
        self._transport = transport
        self._timeout = timeout
        self._gzip = gzip
        self._retry_after_cap = retry_after_cap
        self._clock = clock
        self._warnings = RateLimitedLogger(300.0)
        parts = urlsplit(self._base_url)
        if api_key and parts.scheme == "http" and not is_loopback_host(parts.hostname):
            logger.warning(
                "server_url %s is plain http: the API key and events travel unencrypted; use https",
                display_url(self._base_url),
            )

    def __repr__(self) -> str:
        return (
            f"TelemetryApi(server_url={display_url(self._base_url)!r}, timeout={self._timeout!r})"
        )

    def close(self) -> None:
        """Close the transport, if it has a ``close()``."""
        close = getattr(self._transport, "close", None)
        if callable(close):
            close()

    def _exchange(
        self, path: str, body: bytes, headers: dict[str, str], timeout: float | None
    ) -> TransportResponse:
        request = TransportRequest(
            method="POST",
            url=self._base_url + path,
            headers=headers,
            content=body,
            timeout=self._timeout if timeout is None else timeout,
        )
        try:
            response = self._transport.handle_request(request)
        except TransportError:
            raise
        except Exception as exc:  # a user's transport: whatever it throws means "no reply"
            text = redact(f"{type(exc).__name__}: {exc}", self._api_key)[:300]
            raise TransportError(f"transport failed: {text}") from exc
        if not isinstance(response, TransportResponse):
            raise TransportError(
                f"transport returned {type(response).__name__}, not a TransportResponse"
            )
        return response

    def send_events(
        self, event_texts: Sequence[str], *, timeout: float | None = None
    ) -> SendResult:
        """POST a batch of stored event JSON texts; classify the reply. Never raises for I/O."""
        body = batch_body(event_texts)
        if self._gzip:
            body = gzip.compress(body, compresslevel=6, mtime=0)
        headers = wire.event_headers(self._api_key, get_version(), gzip=self._gzip)
        logger.debug(
            "POST %s%s: %d events, %d bytes",
            display_url(self._base_url),
            wire.EVENTS_PATH,
            len(event_texts),
            len(body),
        )
        try:
            response = self._exchange(wire.EVENTS_PATH, body, headers, timeout)
        except TransportError as exc:
            detail = redact(str(exc), self._api_key)
            logger.debug("events POST failed: %s", detail)
            return SendResult(kind=SendKind.RETRY, status=None, detail=detail)
        result = classify_events_reply(
            response.status_code,
            response.headers,
            response.content,
            len(event_texts),
            secret=self._api_key,
            now=self._clock(),
            retry_after_cap=self._retry_after_cap,
        )
        logger.debug(
            "events reply %d (%d bytes): %s",
            response.status_code,
            len(response.content),
            redact(response.content[:2000].decode("utf-8", "replace"), self._api_key),
        )
        if result.malformed:
            self._warnings.warning(
                "malformed-2xx",
                "server answered %d with an unreadable body (%d bytes); "
                "counting the batch as accepted",
                response.status_code,
                len(response.content),
            )
        return result

    def post_predictions(
        self, queries: Sequence[PredictionQuery], *, timeout: float | None = None
    ) -> list[Any]:
        """POST prediction queries (public: no key sent); the raw ``results`` list.

        Raises TransportError on a network error, a non-2xx status or an unreadable reply.
        """
        body = predictions_body(queries)
        headers = wire.prediction_headers(get_version())
        try:
            response = self._exchange(wire.PREDICTIONS_PATH, body, headers, timeout)
        except TransportError as exc:
            raise TransportError(f"predictions request failed: {exc}") from (exc.__cause__ or exc)
        readable, payload = load_json(response.content)
        status = response.status_code
        if not 200 <= status < 300:
            detail = reply_detail(status, response.content, payload, readable, self._api_key)
            raise TransportError(f"predictions request refused: {detail}")
        if not readable:
            raise TransportError(
                f"predictions reply unreadable (HTTP {status}, {len(response.content)} bytes)"
            )
        return prediction_results(payload)


class DryRunApi:
    """Logs batches instead of sending them (``dry_run=True``): nothing leaves the process."""

    def send_events(
        self, event_texts: Sequence[str], *, timeout: float | None = None
    ) -> SendResult:
        """Never sends; the events count as dry run, never as delivered."""
        logger.info("dry run: a batch of %d events was not sent", len(event_texts))
        logger.debug("dry run batch: [%s]", ",".join(event_texts))
        return SendResult(kind=SendKind.DRY_RUN, status=None)

    def close(self) -> None:
        """Nothing to close."""
