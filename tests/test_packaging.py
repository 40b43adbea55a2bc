"""The package as an index shows it: metadata, floors, sdist and wheel contents, library habits.

The tests of built artifacts read ``MOSAIC_DIST_DIR`` (set by ``tox -e min`` and ``tox -e
sdist``, which build the sdist and wheel there and run this suite from the unpacked sdist); the
floors test reads ``MOSAIC_EXPECT_CONSTRAINTS`` (set by ``tox -e min``). Elsewhere they skip.
"""

from __future__ import annotations

import configparser
import email
import email.message
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from .helpers import child_env

ROOT = Path(__file__).resolve().parent.parent
PROJECT_URL = "https://github.com/mosaicstack/telemetry-sdk-python"
RUNTIME = ("requests", "attrs", "cattrs", "tenacity", "platformdirs")
PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg")
    return parser


def declared_floors() -> dict[str, str]:
    """``{name: version}`` of ``install_requires`` (each must be ``name>=version``)."""
    lines = setup_cfg()["options"]["install_requires"].split()
    floors = {}
    for line in lines:
        name, _, version = line.partition(">=")
        floors[name] = version
    return floors


def pinned_minimums() -> dict[str, str]:
    """``{name: version}`` of constraints/minimum.txt."""
    pins = {}
    for line in (ROOT / "constraints" / "minimum.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name] = version
    return pins


def dist_dir() -> Path:
    where = os.environ.get("MOSAIC_DIST_DIR")
    if not where:
        pytest.skip("needs the built sdist and wheel: tox -e min or tox -e sdist")
    return Path(where)


def only(pattern: str) -> Path:
    [found] = sorted(dist_dir().glob(pattern))
    return found


def wheel_metadata() -> email.message.Message:
    with zipfile.ZipFile(only("*.whl")) as wheel:
        [name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(wheel.read(name))


# --- declared metadata ------------------------------------------------------------------------


def test_runtime_dependencies_are_exactly_the_five_with_floors() -> None:
    """install_requires names requests, attrs, cattrs, tenacity, platformdirs, each with a floor."""
    floors = declared_floors()
    assert sorted(floors) == sorted(RUNTIME)
    assert all(re.fullmatch(r"\d+(\.\d+)+", version) for version in floors.values()), floors


def test_declared_floors_are_the_pinned_minimums() -> None:
    """The floors in setup.cfg are what tox -e min installs, one for one."""
    assert declared_floors() == pinned_minimums()


def test_minimum_env_installed_the_floors() -> None:
    """In tox -e min, every runtime dependency is installed at exactly its floor."""
    if not os.environ.get("MOSAIC_EXPECT_CONSTRAINTS"):
        pytest.skip("only in tox -e min")
    installed = {name: metadata.version(name) for name in RUNTIME}
    assert installed == pinned_minimums()


def test_classifiers_name_every_supported_python() -> None:
    """One classifier per supported Python, starting at python_requires."""
    cfg = setup_cfg()
    assert cfg["options"]["python_requires"] == f">={PYTHONS[0]}"
    classifiers = cfg["metadata"]["classifiers"].strip().splitlines()
    named = [c.rsplit(" ", 1)[1] for c in classifiers if re.search(r"Python :: 3\.\d+$", c)]
    assert named == list(PYTHONS)
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639: the expression


def test_readme_links_are_absolute_and_name_existing_files() -> None:
    """The README reads well on an index: no relative links; project links name real files."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert targets, "the README links its docs"
    assert [t for t in targets if not t.startswith(("https://", "http://", "#"))] == []
    blob = f"{PROJECT_URL}/blob/main/"
    missing = [t for t in targets if t.startswith(blob) and not (ROOT / t[len(blob) :]).is_file()]
    assert missing == []


def test_readme_first_screen_says_where_the_outbox_stays() -> None:
    """Within its first 30 lines the README names the default file, how to move and remove it."""
    top = "\n".join((ROOT / "README.md").read_text().splitlines()[:30])
    assert top.index("pip install") < top.index("outbox-<hash>.sqlite3")
    for needle in (
        "~/.local/state/mosaic-telemetry/outbox-<hash>.sqlite3",
        "outbox_path",
        "MOSAIC_TELEMETRY_OUTBOX_PATH",
        "removing the file",
    ):
        assert needle in top, needle


# --- built artifacts (tox -e min, tox -e sdist) ---------------------------------------------


def test_wheel_metadata_for_the_index() -> None:
    """The wheel carries PEP 639 licence fields, project URLs, people and the floors."""
    meta = wheel_metadata()
    assert meta["License-Expression"] == "MPL-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Author"] and meta["Maintainer"]
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert set(urls) >= {"Homepage", "Documentation", "Changelog", "Source", "Issues"}
    assert all(u.startswith(PROJECT_URL) for u in urls.values())
    requires = sorted(r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r)
    assert requires == sorted(f"{n}>={v}" for n, v in declared_floors().items())
    assert meta["Requires-Python"] == f">={PYTHONS[0]}"
    assert meta["Description-Content-Type"] == "text/markdown"


def test_wheel_holds_every_module_and_the_license() -> None:
    """Every module of the source tree (subpackages included) and py.typed are in the wheel."""
    with zipfile.ZipFile(only("*.whl")) as wheel:
        names = set(wheel.namelist())
    sources = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "mosaic_telemetry").rglob("*")
        if p.suffix == ".py" or p.name == "py.typed"
    }
    assert sources - names == set()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_sdist_holds_what_its_tests_need() -> None:
    """The sdist has the tests with their helpers, the docs, the changelog, tox.ini, the floors."""
    with tarfile.open(only("*.tar.gz")) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    needed = {
        "CHANGELOG.md",
        "LICENSE",
        "README.md",
        "tox.ini",
        "setup.cfg",
        "pyproject.toml",
        "constraints/minimum.txt",
        "tests/__init__.py",
        "tests/conftest.py",
        "tests/helpers.py",
        "tests/reliability/__init__.py",
        "tests/reliability/conftest.py",
        "docs/gen_api_reference.py",
        "benchmarks/run.py",
    }
    needed |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert needed - names == set()
    assert not [n for n in names if n.startswith(".ci/") or "__pycache__" in n]


# --- library habits ---------------------------------------------------------------------------


def test_logger_has_only_a_null_handler() -> None:
    """Importing the SDK gives its logger a NullHandler and nothing else (the host decides)."""
    import logging

    import mosaic_telemetry  # noqa: F401

    handlers = logging.getLogger("mosaic_telemetry").handlers
    assert [type(h) for h in handlers] == [logging.NullHandler]


def test_sdk_warning_prints_nothing_without_logging_config() -> None:
    """With no logging set up, an SDK warning reaches no stderr (no last-resort handler)."""
    script = (
        "import logging, mosaic_telemetry\n"
        "mosaic_telemetry.TelemetryClient  # the lazy door: the SDK's code loads on first use\n"
        "logging.getLogger('mosaic_telemetry').warning('sdk-warning-marker')\n"
        "logging.getLogger('elsewhere').warning('host-warning-marker')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "sdk-warning-marker" not in done.stderr
    assert "host-warning-marker" in done.stderr  # the same setup shows other loggers' lines
