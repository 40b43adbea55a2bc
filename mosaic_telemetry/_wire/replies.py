"""Reading an events reply (wire-v1 §1): one ``TransportResponse`` in, one ``SendResult`` out.

Pure: no I/O, time passed in. No reply is trusted: the body may be cut, not JSON, of the wrong
shape, name event ids we never sent or spell ours in upper case; every text taken from it is
redacted after decoding (``_secrets.redact``) before anyone can log, store or show it.
"""

from __future__ import annotations

import enum
import json
import math
import re
import uuid
from collections.abc import Mapping
from datetime import timezone
from typing import Any

import attrs

from .._secrets import redact
from .http import (
    HEADER_RETRY_AFTER,
    KEY_DETAIL,
    KEY_ERROR,
    KEY_EVENT_ID,
    KEY_EVENTS,
    KEY_LOC,
    KEY_MSG,
    KEY_RESULTS,
    KEY_STATUS,
    STATUS_ACCEPTED,
    STATUS_DUPLICATE,
    STATUS_REJECTED,
)

__all__ = [
    "SendKind",
    "SendResult",
    "Verdict",
    "classify_events_reply",
    "load_json",
    "parse_batch_results",
    "parse_detail",
    "parse_invalid_indices",
    "parse_retry_after",
    "reply_detail",
]

_DETAIL_CHARS = 300
_MAX_HEADER_CHARS = 200
# delta-seconds (RFC 9110 §10.2.3), leniently also a sign and a fraction: "2", " 2.5 ", "-1".
_DELTA_SECONDS = re.compile(r"[ \t]*[+-]?[0-9]+(?:\.[0-9]*)?[ \t]*")  # OWS: SP, HTAB


class SendKind(enum.Enum):
    """What the worker must do with a batch, from the server's reply (wire-v1 §1)."""

    OK = "ok"  # 2xx: apply the per-event verdicts
    RETRY = "retry"  # 429, 5xx, timeout, network error: back off, keep the events
    AUTH = "auth"  # 401/403: keep the events, pause
    TOO_LARGE = "too_large"  # 413: split the batch
    BAD_REQUEST = "bad_request"  # 400: never resend as is (split or dead-letter)
    INVALID = "invalid"  # 422: dead-letter the named indices, resend the rest (or bisect)
    CLIENT_ERROR = "client_error"  # 3xx and any other 4xx: not understood, keep the events
    DRY_RUN = "dry_run"  # nothing was sent: dry_run=True (counted apart, never as delivered)


@attrs.frozen
class Verdict:
    """The server's word on one event of a 2xx reply."""

    status: str  # accepted | duplicate | rejected
    error: str | None = None


@attrs.frozen
class SendResult:
    """The classified outcome of one events POST."""

    kind: SendKind
    #: HTTP status; None when no reply was read (network error, timeout).
    status: int | None
    #: OK only: canonical event id -> verdict; None when the reply had no readable results.
    verdicts: Mapping[str, Verdict] | None = None
    #: INVALID only: batch index -> reason; empty when no index could be read (bisect).
    invalid: Mapping[int, str] = attrs.field(factory=dict)
    #: RETRY only: seconds from Retry-After, clamped to the cap.
    retry_after: float | None = None
    #: Short text for logs and dead letters; never contains the key.
    detail: str = ""
    #: OK only: the reply body could not be read as wire-v1 (all counted as accepted).
    malformed: bool = False


def load_json(content: bytes) -> tuple[bool, Any]:
    """(True, value) for a readable JSON body, (False, None) otherwise; never raises."""
    if not content.strip():
        return False, None
    try:
        return True, json.loads(content)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, deep nesting
        return False, None


def _canonical_id(value: str) -> str:
    """An event id as we store it (lowercase, dashed); unparseable text stays as it is."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


def parse_batch_results(payload: Any, secret: str = "") -> dict[str, Verdict] | None:
    """Per-event verdicts of a 2xx reply, keyed by canonical event id.

    None when the reply has no readable ``results`` (then all count as accepted). Entries that
    are not readable are skipped.
    """
    if not isinstance(payload, Mapping):
        return None
    results = payload.get(KEY_RESULTS)
    if not isinstance(results, list):
        return None
    verdicts: dict[str, Verdict] = {}
    for item in results:
        if not isinstance(item, Mapping):
            continue
        event_id, status, error = item.get(KEY_EVENT_ID), item.get(KEY_STATUS), item.get(KEY_ERROR)
        if isinstance(event_id, str) and status in (
            STATUS_ACCEPTED,
            STATUS_DUPLICATE,
            STATUS_REJECTED,
        ):
            text = redact(error, secret)[:_DETAIL_CHARS] if isinstance(error, str) else None
            verdicts[_canonical_id(event_id)] = Verdict(status, text)
    return verdicts


def parse_invalid_indices(payload: Any, batch_len: int, secret: str = "") -> dict[int, str]:
    """Batch indices named by a FastAPI-style 422 reply (``loc = [body, events, INDEX]``)."""
    indices: dict[int, str] = {}
    detail = payload.get(KEY_DETAIL) if isinstance(payload, Mapping) else None
    if not isinstance(detail, list):
        return indices
    for item in detail:
        if not isinstance(item, Mapping):
            continue
        loc, msg = item.get(KEY_LOC), item.get(KEY_MSG)
        if not isinstance(loc, list) or len(loc) < 3 or loc[1] != KEY_EVENTS:
            continue
        index = loc[2]
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < batch_len:
            field = ".".join(str(part) for part in loc[3:]) or "event"
            text = f"{field}: {msg}" if isinstance(msg, str) else field
            text = redact(text, secret)[:_DETAIL_CHARS]
            indices[index] = f"{indices[index]}; {text}" if index in indices else text
    return indices


def parse_detail(payload: Any) -> str:
    """A short text of an error reply's ``detail`` (not yet redacted)."""
    detail = payload.get(KEY_DETAIL) if isinstance(payload, Mapping) else payload
    text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    return text[:2000]


def reply_detail(status: int, content: bytes, payload: Any, readable: bool, secret: str) -> str:
    """``"HTTP <status>: <detail>"``, one line, redacted, at most a few hundred characters."""
    text = parse_detail(payload) if readable else content[:2000].decode("utf-8", "replace")
    text = " ".join(redact(text, secret).split())[:_DETAIL_CHARS]
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"


def parse_retry_after(value: str | None, *, now: float, cap: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, clamped to ``[0, cap]``.

    ``value`` is delta-seconds or an HTTP-date; ``now`` is the current epoch time in seconds
    (only an HTTP-date needs it). A date in the past gives 0; a missing or unreadable value
    gives None (never raises).
    """
    if value is None or len(value) > _MAX_HEADER_CHARS:
        return None
    if _DELTA_SECONDS.fullmatch(value):
        seconds = float(value)  # a long digit string becomes inf, which the clamp handles
    else:
        import email.utils  # 10 ms to import, for the rare HTTP-date: not at import time

        try:
            when = email.utils.parsedate_to_datetime(value.strip())
            if when.tzinfo is None:  # "-0000" means UTC with no claim about local time
                when = when.replace(tzinfo=timezone.utc)
            seconds = when.timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError, OSError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), cap)


_KIND_BY_STATUS = {
    400: SendKind.BAD_REQUEST,
    401: SendKind.AUTH,
    403: SendKind.AUTH,
    413: SendKind.TOO_LARGE,
}


def classify_events_reply(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    batch_len: int,
    *,
    secret: str,
    now: float,
    retry_after_cap: float,
) -> SendResult:
    """Classify a reply to an events POST of ``batch_len`` events (wire-v1 §1's table).

    ``headers`` must look names up case-insensitively (``seam.Headers`` does).
    """
    readable, payload = load_json(content)
    if 200 <= status < 300:
        verdicts = parse_batch_results(payload, secret) if readable else None
        # results absent means "all accepted"; not JSON, not an object, or results of the
        # wrong type is malformed: still accepted (the status says so), with a warning.
        malformed = not isinstance(payload, Mapping) or (
            KEY_RESULTS in payload and verdicts is None
        )
        if status == 204 and not content:
            malformed = False
        return SendResult(kind=SendKind.OK, status=status, verdicts=verdicts, malformed=malformed)
    detail = reply_detail(status, content, payload, readable, secret)
    if status == 429 or 500 <= status < 600:
        retry_after = parse_retry_after(
            headers.get(HEADER_RETRY_AFTER), now=now, cap=retry_after_cap
        )
        return SendResult(
            kind=SendKind.RETRY, status=status, retry_after=retry_after, detail=detail
        )
    if status == 422:
        invalid = parse_invalid_indices(payload, batch_len, secret) if readable else {}
        return SendResult(kind=SendKind.INVALID, status=status, invalid=invalid, detail=detail)
    kind = _KIND_BY_STATUS.get(status, SendKind.CLIENT_ERROR)
    return SendResult(kind=kind, status=status, detail=detail)
