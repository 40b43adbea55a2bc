"""Every Python block in the README and docs runs against a real loopback server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mosaic_telemetry.testing import FakeTelemetryServer

from .helpers import API_KEY, INSTANCE_ID

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[tuple[str, int, str]]:
    """(page, block number, code) for every ```python block."""
    found = []
    for page in PAGES:
        for number, match in enumerate(BLOCK.finditer(page.read_text()), start=1):
            found.append((page.relative_to(ROOT).as_posix(), number, match.group(1)))
    return found


@pytest.mark.parametrize(
    ("page", "number", "code"), python_blocks(), ids=[f"{p}#{n}" for p, n, _ in python_blocks()]
)
def test_code_block_runs(
    page: str,
    number: int,
    code: str,
    server: FakeTelemetryServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The block runs as written, with MOSAIC_TELEMETRY_* pointing at the test server."""
    monkeypatch.setenv("MOSAIC_TELEMETRY_SERVER_URL", server.url)
    monkeypatch.setenv("MOSAIC_TELEMETRY_API_KEY", API_KEY)
    monkeypatch.setenv("MOSAIC_TELEMETRY_INSTANCE_ID", INSTANCE_ID)
    monkeypatch.setenv("MOSAIC_TELEMETRY_OUTBOX_PATH", str(tmp_path / "outbox.sqlite3"))
    exec(compile(code, f"{page}#{number}", "exec"), {"__name__": "__docs__"})
    assert all(r.status < 400 for r in server.requests), [r.status for r in server.requests]
