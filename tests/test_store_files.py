"""Tests of the outbox location (``_store/files.py``): modes; paths that cannot hold one."""

from __future__ import annotations

import os
import pathlib
import stat

import pytest

from mosaic_telemetry._exceptions import OutboxError

from .store_helpers import (
    Factory,
    fill,
)

pytest_plugins = ["tests.store_fixtures"]


def test_file_and_directory_modes(open_sqlite: Factory, db_path: pathlib.Path) -> None:
    """A new parent directory is 0700, the database and its -wal/-shm are 0600."""
    outbox = open_sqlite()
    fill(outbox, 1)
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    for name in (db_path.name, f"{db_path.name}-wal", f"{db_path.name}-shm"):
        side = db_path.parent / name
        assert side.exists(), name
        assert stat.S_IMODE(side.stat().st_mode) == 0o600, name


def test_path_under_a_regular_file_is_refused(open_sqlite: Factory, tmp_path: pathlib.Path) -> None:
    """A location that cannot be created raises OutboxError naming the path."""
    (tmp_path / "afile").write_text("not a directory")
    path = tmp_path / "afile" / "outbox.sqlite3"
    with pytest.raises(OutboxError, match="afile"):
        open_sqlite(path)
    with pytest.raises(OutboxError, match="afile"):
        open_sqlite(tmp_path / "afile" / "deeper" / "outbox.sqlite3")


def test_path_that_is_a_directory_is_refused(open_sqlite: Factory, tmp_path: pathlib.Path) -> None:
    """A directory where the file should be raises OutboxError naming the path."""
    (tmp_path / "dir.sqlite3").mkdir()
    with pytest.raises(OutboxError, match=r"dir\.sqlite3"):
        open_sqlite(tmp_path / "dir.sqlite3")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0500")
def test_read_only_directory_is_refused(open_sqlite: Factory, tmp_path: pathlib.Path) -> None:
    """A directory without write permission raises OutboxError naming the path."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(OutboxError, match="locked"):
            open_sqlite(locked / "outbox.sqlite3")
    finally:
        locked.chmod(0o700)
