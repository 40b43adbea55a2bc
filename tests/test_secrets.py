"""The API key is hidden from every text the SDK logs, stores or shows."""

from __future__ import annotations

from mosaic_telemetry._secrets import REDACTED, looks_like_key, redact

KEY = "0123456789abcdef" * 4


def test_the_key_is_replaced_in_any_letter_case() -> None:
    """The key, lower or upper case, becomes the redaction marker."""
    assert redact(f"x {KEY} y {KEY.upper()}", KEY) == f"x {REDACTED} y {REDACTED}"


def test_a_percent_encoded_key_is_decoded_and_hidden() -> None:
    """A URL-encoded echo of the key is hidden (the text is decoded first)."""
    encoded = "".join(f"%{ord(c):02x}" for c in KEY)
    assert KEY not in redact(f"token={encoded}", KEY)
    assert REDACTED in redact(f"token={encoded}", KEY)


def test_anything_key_shaped_is_hidden_without_a_secret() -> None:
    """64 hexadecimal characters in a row are hidden even when the key is not known."""
    other = "fe" * 32
    assert redact(f"key {other}!") == f"key {REDACTED}!"
    assert redact("an event id 12345678-1234-4234-8234-123456789abc") == (
        "an event id 12345678-1234-4234-8234-123456789abc"
    )


def test_looks_like_key() -> None:
    """A value holding a 64-hex run looks like a key; a UUID or a short hex does not."""
    assert looks_like_key(KEY)
    assert looks_like_key(f" {KEY}\n")
    assert not looks_like_key("12345678-1234-4234-8234-123456789abc")
    assert not looks_like_key("ab" * 20)
    assert not looks_like_key(None)


def test_a_json_escaped_key_in_undecoded_text_is_hidden() -> None:
    """A raw reply body spelling the key as \\u escapes (any case) is unescaped, then hidden."""
    escaped = "".join(f"\\u{ord(c):04x}" for c in KEY)
    upper = "".join(f"\\u{ord(c.upper()):04X}" for c in KEY)
    for spelled, prefix in ((f"Bearer {escaped}", "Bearer "), (upper, "")):
        body = f'{{"detail": "{spelled}"}}'
        assert redact(body, KEY) == f'{{"detail": "{prefix}{REDACTED}"}}'
    assert redact(f"x {escaped}") == f"x {REDACTED}"  # key-shaped, even without the secret
    assert redact('{"model": "caf\\u00e9"}', KEY) == '{"model": "caf\\u00e9"}'  # left as is
