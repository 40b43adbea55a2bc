"""Keeping the API key out of every text the SDK logs, stores or shows.

``redact`` runs on text that has already been decoded (JSON escapes such as ``\\u0061`` are
letters by then), so a server that echoes the key in any JSON spelling, in another letter
case or percent-encoded cannot get it into a log line, a dead-letter reason or CLI output.
Text that was not decoded (a raw reply body at DEBUG) is unescaped first when its ``\\uXXXX``
escapes spell something to hide. Anything else that looks like a key (64 hexadecimal
characters) is hidden too.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote

__all__ = ["REDACTED", "looks_like_key", "redact"]

REDACTED: Final = "[api key]"
_KEY_LIKE = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")
_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def _unescaped(text: str) -> str:
    return _JSON_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def looks_like_key(value: object) -> bool:
    """True for text that holds 64 hexadecimal characters in a row (an API key's shape)."""
    return isinstance(value, str) and _KEY_LIKE.search(value) is not None


def redact(text: str, secret: str | None = None) -> str:
    """``text`` with ``secret`` (any letter case, also percent- or JSON-escaped) and key-like
    runs hidden."""
    if "\\u" in text:
        decoded = _unescaped(text)
        if (secret and secret.lower() in decoded.lower()) or _KEY_LIKE.search(decoded):
            text = decoded
    if "%" in text and secret and secret.lower() in unquote(text).lower():
        text = unquote(text)
    if secret:
        text = re.sub(re.escape(secret), REDACTED, text, flags=re.IGNORECASE)
    return _KEY_LIKE.sub(REDACTED, text)
