"""Keeping the API key out of every text the SDK logs, stores or shows.

``redact`` runs on text that has already been decoded (JSON escapes such as ``\\u0061`` are
letters by then), so a server that echoes the key in any JSON spelling, in another letter
case or percent-encoded cannot get it into a log line, a dead-letter reason or CLI output.
Anything else that looks like a key (64 hexadecimal characters) is hidden too.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote

__all__ = ["REDACTED", "looks_like_key", "redact"]

REDACTED: Final = "[api key]"
_KEY_LIKE = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")


def looks_like_key(value: object) -> bool:
    """True for text that holds 64 hexadecimal characters in a row (an API key's shape)."""
    return isinstance(value, str) and _KEY_LIKE.search(value) is not None


def redact(text: str, secret: str | None = None) -> str:
    """``text`` with ``secret`` (any letter case, also percent-encoded) and key-like runs hidden."""
    if "%" in text and secret and secret.lower() in unquote(text).lower():
        text = unquote(text)
    if secret:
        text = re.sub(re.escape(secret), REDACTED, text, flags=re.IGNORECASE)
    return _KEY_LIKE.sub(REDACTED, text)
