"""Reading an events reply: verdicts, 422 indices, Retry-After, redaction, classification."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mosaic_telemetry._delivery.seam import Headers
from mosaic_telemetry._wire.replies import (
    SendKind,
    SendResult,
    Verdict,
    classify_events_reply,
    parse_batch_results,
    parse_invalid_indices,
    parse_retry_after,
)

NOW = 1_700_000_000.0  # a fixed "current" epoch time
CAP = 3600.0


# --- parse_retry_after ------------------------------------------------------------------------
def http_date(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, tz=timezone.utc), usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", 2.0),
        ("0", 0.0),
        (" 120 ", 120.0),
        ("2.5", 2.5),
        ("-5", 0.0),
        ("86400", CAP),
        ("9" * 500, None),  # over the header length limit: garbage
        ("9" * 150, CAP),
    ],
)
def test_parse_retry_after_delta_seconds(value: str, expected: float | None) -> None:
    """Delta-seconds (integer or fraction) are read, negatives clamp to 0 and huge values to cap."""
    assert expected == parse_retry_after(value, now=NOW, cap=CAP)


def test_parse_retry_after_future_http_date() -> None:
    """An HTTP-date in the future gives the seconds from the injected ``now`` until then."""
    assert parse_retry_after(http_date(NOW + 30), now=NOW, cap=CAP) == 30.0


def test_parse_retry_after_far_future_http_date_is_capped() -> None:
    """An HTTP-date days away is clamped to the cap."""
    assert parse_retry_after(http_date(NOW + 5 * 86400), now=NOW, cap=CAP) == CAP


def test_parse_retry_after_past_http_date_is_zero() -> None:
    """An HTTP-date in the past means "retry now": 0 seconds."""
    assert parse_retry_after(http_date(NOW - 600), now=NOW, cap=CAP) == 0.0


def test_parse_retry_after_http_date_without_zone_is_utc() -> None:
    """A ``-0000`` HTTP-date (no zone claim) is read as UTC, not local time."""
    value = http_date(NOW + 10).replace("GMT", "-0000")
    assert parse_retry_after(value, now=NOW, cap=CAP) == 10.0


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "1e3",
        "nan",
        "inf",
        "0x10",
        "12 seconds",
        "Wed, 99 Foo 2015",
        "0\x1f",  # a control character float() refuses but \s matched (Hypothesis found it)
    ],
)
def test_parse_retry_after_garbage_is_none(value: str | None) -> None:
    """Missing or unreadable values give None instead of raising."""
    assert parse_retry_after(value, now=NOW, cap=CAP) is None


@given(st.text(max_size=300), st.floats(min_value=0, max_value=1e6))
def test_parse_retry_after_never_raises(value: str, cap: float) -> None:
    """For any text, the result is None or a float within [0, cap]."""
    result = parse_retry_after(value, now=NOW, cap=cap)
    assert result is None or (isinstance(result, float) and 0.0 <= result <= cap)


@given(st.integers(min_value=-(10**6), max_value=10**12))
def test_parse_retry_after_any_integer_is_clamped(seconds: int) -> None:
    """Any integer delta-seconds lands in [0, cap]."""
    assert min(max(float(seconds), 0.0), CAP) == parse_retry_after(str(seconds), now=NOW, cap=CAP)


def test_batch_results_are_read_leniently() -> None:
    """Verdicts are read per event; junk entries are skipped; no results means None."""
    payload = {
        "accepted": 1,
        "results": [
            {"event_id": "a", "status": "accepted", "error": None},
            {"event_id": "b", "status": "rejected", "error": "bad model"},
            {"event_id": "c", "status": "weird"},
            "junk",
        ],
    }
    assert parse_batch_results(payload) == {
        "a": Verdict("accepted", None),
        "b": Verdict("rejected", "bad model"),
    }
    assert parse_batch_results({"accepted": 3}) is None
    assert parse_batch_results("not json") is None


def test_invalid_indices_from_fastapi_422() -> None:
    """A 422 detail names batch indices; out-of-range or non-event locations are ignored."""
    payload = {
        "detail": [
            {"loc": ["body", "events", 2, "model"], "msg": "too long", "type": "value_error"},
            {"loc": ["body", "events", 9, "model"], "msg": "out of range"},
            {"loc": ["body"], "msg": "whatever"},
        ]
    }
    assert parse_invalid_indices(payload, 3) == {2: "model: too long"}
    assert parse_invalid_indices({"detail": "text"}, 3) == {}


# --- classification (wire-v1 §1's table) -----------------------------------------------------
KEY = "ab" * 32


def classify(
    status: int, body: bytes = b"", headers: dict[str, str] | None = None, n: int = 3
) -> SendResult:
    """Classify a reply to a batch of ``n`` events, with the test key as the secret."""
    return classify_events_reply(
        status, Headers(headers or {}), body, n, secret=KEY, now=NOW, retry_after_cap=CAP
    )


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, SendKind.OK),
        (202, SendKind.OK),
        (204, SendKind.OK),
        (400, SendKind.BAD_REQUEST),
        (401, SendKind.AUTH),
        (403, SendKind.AUTH),
        (413, SendKind.TOO_LARGE),
        (422, SendKind.INVALID),
        (429, SendKind.RETRY),
        (500, SendKind.RETRY),
        (503, SendKind.RETRY),
        (302, SendKind.CLIENT_ERROR),
        (404, SendKind.CLIENT_ERROR),
    ],
)
def test_each_status_of_the_table_has_its_kind(status: int, kind: SendKind) -> None:
    """Every status row of wire-v1 §1 maps to the action the SDK must take."""
    assert classify(status).kind is kind


def test_retry_after_header_is_read_case_insensitively() -> None:
    """A 429's ``retry-after`` header (any case) gives the seconds to wait."""
    assert classify(429, headers={"retry-after": "7"}).retry_after == 7.0


def test_verdict_ids_are_compared_as_uuids() -> None:
    """An upper-cased spelling of our id names our event (ids compare as UUIDs)."""
    ours = "12345678-1234-4234-8234-123456789abc"
    body = (
        b'{"results": [{"event_id": "12345678-1234-4234-8234-123456789ABC", "status": "accepted"}]}'
    )
    result = classify(202, body)
    assert result.verdicts == {ours: Verdict("accepted", None)}


def test_malformed_2xx_is_accepted_but_marked() -> None:
    """A 2xx whose results cannot be read counts as accepted and says it was malformed."""
    result = classify(200, b'{"results": "nope"}')
    assert (result.kind, result.verdicts, result.malformed) == (SendKind.OK, None, True)
    assert classify(204).malformed is False


def test_a_json_escaped_key_echo_is_redacted_after_decoding() -> None:
    """``\\u0061\\u0062...`` in a reply decodes to the key: it never reaches detail or verdicts."""
    escaped = "".join(f"\\u{ord(c):04x}" for c in KEY)
    detail = classify(400, f'{{"detail": "no: Bearer {escaped}"}}'.encode()).detail
    assert KEY not in detail
    assert "[api key]" in detail
    body = f'{{"results": [{{"event_id": "a", "status": "rejected", "error": "{escaped}"}}]}}'
    verdicts = classify(202, body.encode()).verdicts
    assert verdicts is not None
    assert KEY not in str(verdicts["a"].error)


def test_an_upper_cased_or_percent_encoded_key_is_redacted() -> None:
    """The key in another letter case or percent-encoded is hidden too."""
    encoded = "".join(f"%{ord(c):02X}" for c in KEY)
    for text in (KEY.upper(), encoded):
        detail = classify(503, f'{{"detail": "{text}"}}'.encode()).detail
        assert KEY not in detail.lower()
        assert "[api key]" in detail
