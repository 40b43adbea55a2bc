"""Release helper: the version string to publish (``python -m mosaic_telemetry._release``).

Stable releases are ``X.Y.Z`` (from ``main`` and tags); development builds are
``X.Y.Z.devYYYYMMDDHHMMSS`` with the UTC time of the build (PEP 440), the same instant the JS
SDK writes as the semver ``X.Y.Z-dev.YYYYMMDDHHmmss``. ``--write`` puts the version into
``setup.cfg``. Not used at run time.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["dev_version", "main", "stable_version", "write_version"]

_STABLE = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
_SETUP_VERSION = re.compile(r"^version = .*$", re.MULTILINE)


def stable_version(base: str) -> str:
    """``base`` checked to be ``X.Y.Z`` (no leading zeros); raises ValueError otherwise."""
    if not _STABLE.fullmatch(base):
        raise ValueError(f"version must be X.Y.Z, got {base!r}")
    return base


def dev_version(base: str, now: datetime | None = None) -> str:
    """``X.Y.Z.devYYYYMMDDHHMMSS`` for ``now`` (aware; default: the current UTC time)."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{stable_version(base)}.dev{moment:%Y%m%d%H%M%S}"


def write_version(setup_cfg: Path, version: str) -> None:
    """Replace the ``version =`` line of ``setup_cfg``."""
    text = setup_cfg.read_text()
    if not _SETUP_VERSION.search(text):
        raise ValueError(f"{setup_cfg} has no 'version =' line")
    setup_cfg.write_text(_SETUP_VERSION.sub(f"version = {version}", text, count=1))


def _base_from(setup_cfg: Path) -> str:
    match = _SETUP_VERSION.search(setup_cfg.read_text())
    if not match:
        raise ValueError(f"{setup_cfg} has no 'version =' line")
    return match.group(0).split("=", 1)[1].strip().split(".dev", 1)[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Print (and with --write, store) the version to publish."""
    parser = argparse.ArgumentParser(prog="python -m mosaic_telemetry._release")
    parser.add_argument("--dev", action="store_true", help="a dev build: X.Y.Z.devYYYYMMDDHHMMSS")
    parser.add_argument("--base", help="X.Y.Z (default: the version in setup.cfg)")
    parser.add_argument("--setup-cfg", type=Path, default=Path("setup.cfg"))
    parser.add_argument("--write", action="store_true", help="write the version into setup.cfg")
    args = parser.parse_args(argv)
    try:
        base = args.base or _base_from(args.setup_cfg)
        version = dev_version(base) if args.dev else stable_version(base)
        if args.write:
            write_version(args.setup_cfg, version)
    except (OSError, ValueError) as exc:
        parser.exit(1, f"error: {exc}\n")
    print(version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
