"""Fixtures of the store tests (``tests/test_store_*.py``), on real SQLite files.

A store test module loads them with ``pytest_plugins = ["tests.store_fixtures"]``; the plain
helpers are in ``tests/store_helpers.py``.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from mosaic_telemetry._store import SqliteOutbox

from .store_helpers import Factory, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock shared by the outboxes of one test."""
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: pathlib.Path) -> pathlib.Path:
    """Where the test's outbox file goes (its directory does not exist yet)."""
    return tmp_path / "state" / "outbox.sqlite3"


@pytest.fixture
def open_sqlite(db_path: pathlib.Path, clock: FakeClock) -> Iterator[Factory]:
    """Open SqliteOutbox instances on the test's file; all are closed at teardown."""
    opened: list[SqliteOutbox] = []

    def factory(path: pathlib.Path | None = None, **kwargs: Any) -> SqliteOutbox:
        kwargs.setdefault("clock", clock)
        outbox = SqliteOutbox(path or db_path, **kwargs)
        opened.append(outbox)
        return outbox

    yield factory
    for outbox in opened:
        outbox.close()


@pytest.fixture(params=["file", "memory"])
def make(request: pytest.FixtureRequest, open_sqlite: Factory, clock: FakeClock) -> Factory:
    """Build an outbox on a file or in memory, for behaviour both must share."""
    if request.param == "file":
        return open_sqlite

    def memory(**kwargs: Any) -> SqliteOutbox:
        kwargs.setdefault("clock", clock)
        return SqliteOutbox.in_memory(**kwargs)

    return memory
