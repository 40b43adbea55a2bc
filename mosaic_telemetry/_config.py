"""``TelemetryConfig``: every setting of the client, with environment fallbacks.

Constructor values win over ``MOSAIC_TELEMETRY_*`` environment variables, which win over the
defaults. Construction never raises: ``validate()`` returns the list of problems, and a
client given a config with problems logs them once and keeps events in the outbox instead of
sending garbage requests. Neither ``repr()`` nor a ``validate()`` message ever shows the API
key, nor anything that looks like one, whichever setting it was put in by mistake. An API key
with surrounding whitespace (a copy-pasted trailing newline) is stripped, and that is logged
once at INFO.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import attrs

from ._log import logger
from ._secrets import redact

__all__ = [
    "ENV_PREFIX",
    "Settings",
    "TelemetryConfig",
    "default_outbox_dir",
    "is_loopback_host",
]

ENV_PREFIX = "MOSAIC_TELEMETRY_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_APP_NAME = "mosaic-telemetry"

Durability = Literal["normal", "full"]
ErrorCallback = Callable[[BaseException], None]
#: Where a key with surrounding whitespace came from, once logged (once per process each).
_STRIPPED_LOGGED: set[str] = set()


def _shown(value: object, secret: object = None, limit: int | None = None) -> str:
    """``repr(value)`` for a message: the key and anything key-like hidden, then cut.

    Redaction comes first: cut first, a 64-character key shows as 59 characters that no
    longer look like a key (issue 11).
    """
    text = redact(repr(value), secret if isinstance(secret, str) else None)
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def _strip_key(key: str | None, source: str) -> str | None:
    """``key`` without surrounding whitespace; logged once per source, never the key."""
    if not isinstance(key, str) or key == key.strip():
        return key
    if source not in _STRIPPED_LOGGED:
        _STRIPPED_LOGGED.add(source)
        logger.info(
            "%s had whitespace around it (a trailing newline or spaces); it was stripped",
            source,
        )
    return key.strip()


def _env(name: str) -> str | None:
    return os.environ.get(ENV_PREFIX + name)


def _env_bool(name: str) -> bool | str | None:
    """The env var as a bool; the raw text when it is neither (validate() reports it)."""
    raw = _env(name)
    if raw is None:
        return None
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return raw


def default_outbox_dir() -> Path:
    """The per-user state directory that holds outbox files by default."""
    import platformdirs

    return Path(platformdirs.user_state_dir(_APP_NAME, appauthor=False))


def is_loopback_host(host: str | None) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    import ipaddress  # loaded when a config is validated, not by import mosaic_telemetry

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@attrs.define(kw_only=True, repr=False, eq=False)
class TelemetryConfig:
    """Settings of a TelemetryClient. ``None`` for the first six means: read the env var."""

    server_url: str | None = None
    api_key: str | None = None
    instance_id: str | None = None
    enabled: bool | None = None
    submit_interval_seconds: float = 300.0
    max_queue_size: int = 200_000
    batch_size: int = 100
    request_timeout_seconds: float = 10.0
    prediction_cache_ttl_seconds: float = 21600.0
    dry_run: bool | None = None
    max_retries: int = 3
    outbox_path: str | os.PathLike[str] | None = None
    durability: Durability = "normal"
    shutdown_timeout_seconds: float = 5.0
    on_error: ErrorCallback | None = None
    _raw_enabled: Any = attrs.field(init=False, default=None)
    _raw_dry_run: Any = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.server_url is None:
            self.server_url = _env("SERVER_URL") or ""
        source = "api_key"
        if self.api_key is None:
            self.api_key = _env("API_KEY") or ""
            source = ENV_PREFIX + "API_KEY"
        self.api_key = _strip_key(self.api_key, source)
        if self.instance_id is None:
            self.instance_id = _env("INSTANCE_ID") or ""
        if isinstance(self.instance_id, uuid.UUID):
            self.instance_id = str(self.instance_id)
        if self.outbox_path is None:
            self.outbox_path = _env("OUTBOX_PATH") or None
        self._raw_enabled = self.enabled if self.enabled is not None else _env_bool("ENABLED")
        self._raw_dry_run = self.dry_run if self.dry_run is not None else _env_bool("DRY_RUN")
        self.enabled = self._raw_enabled if isinstance(self._raw_enabled, bool) else True
        self.dry_run = self._raw_dry_run if isinstance(self._raw_dry_run, bool) else False
        if isinstance(self.server_url, str):
            self.server_url = self.server_url.rstrip("/")

    def __repr__(self) -> str:
        key = "'***'" if self.api_key else "''"
        secret = self.api_key
        return (
            f"TelemetryConfig(server_url={_shown(self.server_url, secret)}, api_key={key}, "
            f"instance_id={_shown(self.instance_id, secret)}, enabled={self.enabled!r}, "
            f"dry_run={self.dry_run!r}, outbox_path={_shown(self.outbox_path, secret)}, "
            f"durability={_shown(self.durability, secret)}, "
            f"batch_size={_shown(self.batch_size, secret)}, "
            f"submit_interval_seconds={_shown(self.submit_interval_seconds, secret)})"
        )

    def validate(self) -> list[str]:
        """Every problem of this configuration as ``"field: rule"``; empty when usable."""
        problems: list[str] = []
        for name, raw in (("enabled", self._raw_enabled), ("dry_run", self._raw_dry_run)):
            if raw is not None and not isinstance(raw, bool):
                problems.append(f"{name}: must be true or false (MOSAIC_TELEMETRY_{name.upper()})")
        problems += self._url_problems()
        key = self.api_key
        bad_key = not isinstance(key, str) or not _HEX64.fullmatch(key)
        if bad_key and not (self.dry_run and not key):
            got = str(len(key)) if isinstance(key, str) else type(key).__name__
            if isinstance(key, str) and any(c.isspace() for c in key):
                got += ", with whitespace inside"
            problems.append(
                f"api_key: must be 64 hexadecimal characters (got {got}; "
                "set MOSAIC_TELEMETRY_API_KEY)"
            )
        try:
            uuid.UUID(str(self.instance_id))
        except ValueError:
            problems.append(
                f"instance_id: must be a UUID, got {self._shown(self.instance_id, 60)} "
                "(set MOSAIC_TELEMETRY_INSTANCE_ID)"
            )
        problems += self._number_problems()
        if self.durability not in ("normal", "full"):
            problems.append(
                f"durability: must be 'normal' or 'full', got {self._shown(self.durability, 40)}"
            )
        if self.on_error is not None and not callable(self.on_error):
            problems.append("on_error: must be a callable taking one exception, or None")
        return problems

    def _url_problems(self) -> list[str]:
        url = self.server_url
        if not url:
            return ["server_url: required (set MOSAIC_TELEMETRY_SERVER_URL)"]
        if not isinstance(url, str):
            return [f"server_url: must be a string, got {type(url).__name__}"]
        unusable = f"server_url: must be an http(s) URL with a host, got {self._shown(url, 100)}"
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:  # an unreadable IPv6 literal ("http://[::1")
            return [unusable]
        if parts.scheme not in ("http", "https") or not host:
            return [unusable]
        if parts.query or parts.fragment:
            return [f"server_url: must not have a query or fragment, got {self._shown(url, 100)}"]
        return []

    def _number_problems(self) -> list[str]:
        rules: list[tuple[str, object, bool, str]] = [
            ("submit_interval_seconds", self.submit_interval_seconds, True, "> 0"),
            ("request_timeout_seconds", self.request_timeout_seconds, True, "> 0"),
            ("prediction_cache_ttl_seconds", self.prediction_cache_ttl_seconds, True, ">= 0"),
            ("shutdown_timeout_seconds", self.shutdown_timeout_seconds, True, ">= 0"),
            ("max_queue_size", self.max_queue_size, False, ">= 1"),
            ("batch_size", self.batch_size, False, "in 1..100"),
            ("max_retries", self.max_retries, False, "in 0..20"),
        ]
        checks: dict[str, Callable[[float], bool]] = {
            "> 0": lambda v: v > 0,
            ">= 0": lambda v: v >= 0,
            ">= 1": lambda v: v >= 1,
            "in 1..100": lambda v: 1 <= v <= 100,
            "in 0..20": lambda v: 0 <= v <= 20,
        }
        problems = []
        for name, value, real, rule in rules:
            kind_ok = _number(value) if real else isinstance(value, int) and _number(value)
            if not kind_ok or not checks[rule](value):  # type: ignore[arg-type]
                kind = "a number" if real else "an int"
                problems.append(f"{name}: must be {kind} {rule}, got {self._shown(value, 40)}")
        return problems

    def _shown(self, value: object, limit: int) -> str:
        """``value`` as a message may show it: never the key, nor anything key-like."""
        return _shown(value, self.api_key, limit)

    def resolved_outbox_path(self) -> Path:
        """Where the outbox lives: ``outbox_path``, else one file per server+instance.

        Dry-run events live in a file of their own (``*.dry-run.sqlite3``) so they can never be
        sent later by a client without dry-run.
        """
        if self.outbox_path:
            path = Path(os.fspath(self.outbox_path)).expanduser()
        else:
            import hashlib  # loaded by the first default outbox path, not at import time

            digest = hashlib.sha256(f"{self.server_url}\0{self.instance_id}".encode()).hexdigest()
            path = default_outbox_dir() / f"outbox-{digest[:16]}.sqlite3"
        if self.dry_run:
            path = path.with_name(path.stem + ".dry-run" + (path.suffix or ".sqlite3"))
        return path


@attrs.frozen(kw_only=True)
class Settings:
    """The numbers a client runs by: the config's values, or the default of each one that
    ``validate()`` found a problem with. Taken once, so later edits of the config don't leak in.
    """

    batch_size: int
    max_queue_size: int
    shutdown_timeout_seconds: float
    prediction_cache_ttl_seconds: float
    durability: Durability
    submit_interval_seconds: float
    request_timeout_seconds: float
    max_retries: int

    @classmethod
    def usable(cls, config: TelemetryConfig, problems: list[str]) -> Settings:
        """The settings of ``config``, with the default where ``problems`` names the field."""
        bad = {problem.split(":", 1)[0] for problem in problems}
        defaults = {f.name: f.default for f in attrs.fields(TelemetryConfig)}
        values: dict[str, Any] = {
            name: defaults[name] if name in bad else getattr(config, name)
            for name in attrs.fields_dict(cls)
        }
        return cls(**values)
