"""Secrets never shown: every text the command line prints passes through a :class:`Redactor`.

The SDK already keeps the API key out of what it stores and logs; this is defence in depth
for what the CLI prints: a server may echo the key in a reply the outbox kept (a dead letter's
``reason``, ``last_error``), escaped or encoded so that a plain search misses it, and a user may
put the key in the wrong variable. A secret is found in each character's raw form (any case),
as a JSON or Python escape (``\\u0061``, ``\\\\u0061``, ``\\x61``), URL-encoded (``%61``,
``%2561``), as an HTML entity (``&#97;``, ``&#x61;``), in any mix of these, and base64-encoded.

The secrets are the ``MOSAIC_TELEMETRY_API_KEY`` value and any ``MOSAIC_TELEMETRY_*`` value
that looks like a key, plus whatever a command adds (a key given on its command line). As in
the SDK's own redaction (:mod:`.._secrets`, which works on decoded text), any other run of
64 hex digits is hidden too, and so is a run of 16 or more that a secret contains (a key cut
short). This module adds the encoded forms: stored text may hold them literally (a reply
escaped twice, a file written before the source redaction existed).
"""

from __future__ import annotations

import io
import re
import string
import threading
from collections.abc import Iterable, Mapping
from typing import Final, TextIO

from .._secrets import REDACTED, looks_like_key
from .._secrets import redact as redact_key_like

__all__ = ["REDACTED", "RedactingStream", "Redactor", "secrets_from_env"]

#: Shorter values are not treated as secrets: hiding them would garble ordinary text.
MIN_SECRET_CHARS: Final = 8
#: ``_config.ENV_PREFIX`` (a test holds them equal): importing ``_config`` here would load attrs
#: for every command, ``--help`` included.
ENV_PREFIX: Final = "MOSAIC_TELEMETRY_"
_API_KEY_VAR: Final = ENV_PREFIX + "API_KEY"
#: A run of hex digits sharing this many in a row with a secret is hidden too: a key cut
#: short, as in ``f"{key!r:.60}"`` (an event id's longest run of hex digits is 12).
_PART_CHARS: Final = 16
_HEX_RUN: Final = re.compile(r"[0-9a-fA-F]{16,}")
_HEX_AS_X: Final = bytes(0x78 if chr(i) in string.hexdigits else 0x20 for i in range(256))
_HEX_ROW: Final = b"x" * _PART_CHARS
#: Every encoded form of a character starts with one of these.
_ESCAPE_MARKS: Final = ("\\", "%", "&")


def secrets_from_env(environ: Mapping[str, str]) -> list[str]:
    """The API key from ``environ`` and every MOSAIC_TELEMETRY_* value that looks like a key."""
    found = []
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        if name == _API_KEY_VAR or looks_like_key(value):
            found.append(value.strip())
    return found


def _char_forms(char: str) -> str:
    """A regex matching one character of a secret (either case) in any printable encoding."""
    forms = [re.escape(char)]
    for code in sorted({ord(char.lower()), ord(char.upper())}):
        forms += [
            rf"\\+u0*{code:x}",  # JSON/Python escapes, escaped again any number of times
            rf"\\+x{code:02x}",
            rf"%(?:25)*{code:02x}",  # URL-encoded, also twice
            rf"&\#(?:0*{code}|x0*{code:x});",
        ]
    return "(?:" + "|".join(forms) + ")"


def _base64_cores(secret: str) -> list[str]:
    """The base64 texts that any encoding of a text containing ``secret`` contains.

    Where the secret starts within its 3-byte group decides its encoding; for each of the
    three offsets the whole groups inside the secret encode the same way every time.
    """
    import base64  # only when there is a secret: importing the CLI stays cheap

    raw = secret.encode()
    cores = []
    for start in range(3):
        whole = raw[start:]
        whole = whole[: len(whole) - len(whole) % 3]
        if len(whole) >= 6:
            encoded = base64.b64encode(whole).decode()
            cores += [encoded, encoded.replace("+", "-").replace("/", "_")]
    return cores


class Redactor:
    """Replaces every known secret in a text with :data:`REDACTED`."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: set[str] = set()
        self._plain: list[str] = []  # lower-cased secrets and their base64 cores
        self._lowered: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Hide these too (None, blank and short values are ignored)."""
        new = {s.strip() for s in secrets if s and len(s.strip()) >= MIN_SECRET_CHARS}
        if not new - self._secrets:
            return
        self._secrets |= new
        alternatives = []
        self._plain = []
        for secret in sorted(self._secrets, key=len, reverse=True):
            cores = _base64_cores(secret)
            alternatives.append("".join(_char_forms(c) for c in secret))
            alternatives += [re.escape(core) for core in cores]
            self._plain += [secret.lower(), *(core.lower() for core in cores)]
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE)
        self._lowered = [secret.lower() for secret in self._secrets]

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            # Without an escape mark only the raw or base64 forms can be there: a quick
            # substring test spares the regex (about 50 times slower) on ordinary lines.
            lowered = text.lower()
            marked = any(mark in text for mark in _ESCAPE_MARKS)
            if marked or any(plain in lowered for plain in self._plain):
                text = self._pattern.sub(REDACTED, text)
        # The same for runs of hex digits: one byte translation finds whether there is any.
        if _HEX_ROW in text.encode("utf-8", "surrogatepass").translate(_HEX_AS_X):
            text = _HEX_RUN.sub(self._hide_run, text)
        return text

    def _hide_run(self, match: re.Match[str]) -> str:
        """A key-shaped run (as the SDK's own redaction decides), or a secret cut short."""
        run = match.group(0)
        if redact_key_like(run) == REDACTED:
            return REDACTED
        lowered = run.lower()
        windows = {lowered[i : i + _PART_CHARS] for i in range(len(run) - _PART_CHARS + 1)}
        if any(w in secret for secret in self._lowered for w in windows):
            return REDACTED
        return run


class RedactingStream(io.TextIOBase):
    """A text stream that redacts whole lines before they reach ``target``.

    Text is held until a newline or :meth:`flush`, so a secret split over two ``write``
    calls is still found. Safe to write from several threads.
    """

    def __init__(self, target: TextIO, redactor: Redactor) -> None:
        super().__init__()
        self.target = target
        self._redact = redactor
        self._pending = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            head, newline, tail = self._pending.rpartition("\n")
            if newline:
                self._pending = tail
                self.target.write(self._redact(head + newline))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, ""
            if getattr(self.target, "closed", False):
                return  # nowhere to write: a closed pipe or a test's StringIO, already gone
            if pending:
                self.target.write(self._redact(pending))
        self.target.flush()

    def close(self) -> None:
        """Flush what is held; the target is not ours (stdout, stderr) and stays open.

        Also what the finaliser calls: with the target closed first, it once raised "I/O
        operation on closed file", which Python 3.13 prints as an unraisable exception."""
        if not self.closed:
            self.flush()
            super().close()

    def isatty(self) -> bool:
        return bool(getattr(self.target, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self.target.fileno()
