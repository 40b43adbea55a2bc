"""The docs cannot drift: every Python block runs, examples run, links resolve offline."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mosaic_telemetry import TelemetryClient
from mosaic_telemetry.testing import FakeTelemetryServer

from .helpers import API_KEY, INSTANCE_ID, child_env

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
WHOLE_FILE = re.compile(r"# (docs/examples/\S+\.py)\n")
EXCERPT = re.compile(r"# excerpt of (docs/examples/\S+\.py)\n")


def python_blocks() -> list[tuple[str, str]]:
    """(page#n, code) for every ```python block of the README and docs."""
    found = []
    for page in PAGES:
        if page.exists():
            for number, match in enumerate(BLOCK.finditer(page.read_text()), start=1):
                found.append((f"{page.relative_to(ROOT).as_posix()}#{number}", match.group(1)))
    return found


@pytest.fixture
def docs_env(
    server: FakeTelemetryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """MOSAIC_TELEMETRY_* pointing at the test server and a temp outbox."""
    values = {
        "MOSAIC_TELEMETRY_SERVER_URL": server.url,
        "MOSAIC_TELEMETRY_API_KEY": API_KEY,
        "MOSAIC_TELEMETRY_INSTANCE_ID": INSTANCE_ID,
        "MOSAIC_TELEMETRY_OUTBOX_PATH": str(tmp_path / "outbox.sqlite3"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


BLOCKS = python_blocks()


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """Undo what a block does to logging (basicConfig, levels): later tests see the defaults."""
    root, sdk = logging.getLogger(), logging.getLogger("mosaic_telemetry")
    saved = (root.level, root.handlers[:], sdk.level, sdk.handlers[:])
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    sdk.setLevel(saved[2])
    sdk.handlers[:] = saved[3]


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[w for w, _ in BLOCKS])
@pytest.mark.usefixtures("logging_restored")
def test_code_block_runs(
    where: str, code: str, server: FakeTelemetryServer, docs_env: dict[str, str]
) -> None:
    """Each block runs as written; a whole example must equal its file, an excerpt be in it."""
    if match := EXCERPT.match(code):
        source = (ROOT / match.group(1)).read_text()
        assert code[match.end() :].strip() in source, (
            f"{where} is not an excerpt of {match.group(1)}"
        )
        return
    if match := WHOLE_FILE.match(code):
        assert code[match.end() :] == (ROOT / match.group(1)).read_text(), (
            f"{where} differs from the file"
        )
        return  # the file itself runs in test_example_runs
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})
    assert all(r.status < 400 for r in server.requests), [r.status for r in server.requests]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs(example: Path, server: FakeTelemetryServer, docs_env: dict[str, str]) -> None:
    """Each example program runs to completion against the test server."""
    pytest.importorskip("fastapi") if "fastapi" in example.read_text() else None
    env = {**child_env(), **docs_env}
    done = subprocess.run(
        [sys.executable, str(example)],
        cwd=example.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert all(r.status < 400 for r in server.requests)


def test_multiprocessing_example_delivers_every_child_event(
    server: FakeTelemetryServer, docs_env: dict[str, str]
) -> None:
    """The pool example's 8 child events (fork and spawn) all reach the server."""
    example = ROOT / "docs" / "examples" / "multiprocessing_pool.py"
    done = subprocess.run(
        [sys.executable, str(example)],
        env={**child_env(), **docs_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert len(server.events) == 8
    assert "delivered 8 remaining 0" in done.stdout


def test_fastapi_example_tracks_through_the_lifespan(
    server: FakeTelemetryServer, docs_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The FastAPI example, driven by TestClient, tracks a task and delivers it on shutdown."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    monkeypatch.syspath_prepend(str(ROOT / "docs" / "examples"))
    import fastapi_app

    report = {
        "task_type": "implementation",
        "model": "claude-sonnet-4-5-20250929",
        "provider": "anthropic",
        "complexity": "medium",
        "outcome": "success",
        "duration_ms": 4000,
        "input_tokens": 1200,
        "output_tokens": 300,
        "cost_usd_micros": 9000,
        "gates_passed": True,
    }
    try:
        with TestClient(fastapi_app.app) as http:
            assert isinstance(fastapi_app.telemetry, TelemetryClient)
            assert fastapi_app.telemetry.is_running
            reply = http.post("/tasks/complete", json=report)
            assert reply.status_code == 200
            bad = http.post("/tasks/complete", json={**report, "duration_ms": -1})
            assert bad.status_code == 422 and "task_duration_ms" in bad.text
        assert not fastapi_app.telemetry.is_running
    finally:
        sys.modules.pop("fastapi_app", None)
    assert [e["event_id"] for e in server.events] == [reply.json()["event_id"]]


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the headings of a page."""
    result = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        result.add(slug)
    return result


def test_relative_links_and_anchors_resolve() -> None:
    """Every relative link in the README and docs points at a file (and heading) that exists."""
    broken = []
    for page in PAGES:
        if not page.exists():
            continue
        for target in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def _load_generator() -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gen_api_reference", ROOT / "docs" / "gen_api_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_matches_the_code() -> None:
    """docs/api-reference.md is what the generator makes from today's docstrings."""
    page = (ROOT / "docs" / "api-reference.md").read_text()
    assert page == _load_generator().render(), "run: python docs/gen_api_reference.py"  # type: ignore[attr-defined]


def test_api_reference_names_exactly_the_public_surface() -> None:
    """The documented top-level names are exactly mosaic_telemetry.__all__."""
    import mosaic_telemetry

    page = (ROOT / "docs" / "api-reference.md").read_text()
    top = page.split("## Testing helpers", 1)[0]
    assert set(re.findall(r"^### `(\w+)`", top, re.MULTILINE)) == set(mosaic_telemetry.__all__)
