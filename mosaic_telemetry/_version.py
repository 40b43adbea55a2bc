"""The SDK's version, read lazily from the installed distribution's metadata.

``importlib.metadata`` costs tens of milliseconds to import and scan, so it is consulted on
first use (the worker's User-Agent, ``mosaic_telemetry.__version__``), never at import.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["DISTRIBUTION", "get_version"]

DISTRIBUTION = "mosaicstack-telemetry"
_SOURCE_VERSION = "0.1.0"


@lru_cache(maxsize=1)
def get_version() -> str:
    """The installed version, or the source tree's when the package is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return _SOURCE_VERSION
