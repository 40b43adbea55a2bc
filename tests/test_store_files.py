"""Tests of the outbox location (``_store/files.py``): modes; paths that cannot hold one."""

from __future__ import annotations

import os
import pathlib
import re
import sqlite3
import stat

import pytest

from mosaic_telemetry._exceptions import OutboxError
from mosaic_telemetry._store import SqliteOutbox
from mosaic_telemetry._store.files import NotOursError, spool_dir_of
from mosaic_telemetry._store.spool import SPOOL_DDL

from .store_helpers import Factory, file_state, fill

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


# --- files we don't own ---------------------------------------------------------------------------
OTHER_UID = 4242
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def _made(db_path: pathlib.Path) -> pathlib.Path:
    SqliteOutbox(db_path).close()
    return db_path


@as_root
def test_an_outbox_file_of_another_user_is_refused_untouched(db_path: pathlib.Path) -> None:
    """A file someone else owns raises NotOursError naming path, owner and mode; unmodified."""
    os.chown(_made(db_path), OTHER_UID, OTHER_UID)
    before = file_state(db_path)
    with pytest.raises(NotOursError) as caught:
        SqliteOutbox(db_path)
    message = str(caught.value)
    assert str(db_path) in message and "uid 4242" in message and "mode 0600" in message
    assert file_state(db_path) == before
    assert os.stat(db_path).st_uid == OTHER_UID  # never chowned or chmodded back


@as_root
@pytest.mark.parametrize("what", ["directory", "spool directory", "-wal"])
def test_a_directory_spool_or_side_file_of_another_user_is_refused(
    db_path: pathlib.Path, what: str
) -> None:
    """The outbox's directory, its spool directory and its side files must be ours too."""
    _made(db_path)
    target = {
        "directory": db_path.parent,
        "spool directory": spool_dir_of(db_path),
        "-wal": pathlib.Path(f"{db_path}-wal"),
    }[what]
    if what == "spool directory":
        target.mkdir(mode=0o700)
    if what == "-wal":
        target.write_bytes(b"")
    os.chown(target, OTHER_UID, OTHER_UID)
    with pytest.raises(NotOursError, match=re.escape(str(target))):
        SqliteOutbox(db_path)


@pytest.mark.parametrize("mode", [0o666, 0o620])
def test_a_file_writable_by_others_or_group_is_refused(db_path: pathlib.Path, mode: int) -> None:
    """An outbox file that others (or the group) may write is refused, and left as it was."""
    _made(db_path).chmod(mode)
    with pytest.raises(NotOursError, match=f"mode {mode:04o}"):
        SqliteOutbox(db_path)
    assert stat.S_IMODE(db_path.stat().st_mode) == mode


def test_a_world_writable_directory_is_refused(tmp_path: pathlib.Path) -> None:
    """A shared directory (like a sticky /tmp) is no place for an outbox: refused."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(NotOursError, match="mode 1777"):
        SqliteOutbox(shared / "outbox.sqlite3")
    assert list(shared.iterdir()) == []


@pytest.mark.parametrize("target_exists", [False, True])
def test_a_symlink_is_never_written_through(db_path: pathlib.Path, target_exists: bool) -> None:
    """An outbox path that is a symlink is refused; its target is neither created nor changed."""
    db_path.parent.mkdir(mode=0o700)
    target = db_path.parent / "elsewhere.sqlite3"
    if target_exists:
        _made(target)
    before = target.read_bytes() if target_exists else None
    db_path.symlink_to(target)
    with pytest.raises(NotOursError, match="symbolic link"):
        SqliteOutbox(db_path)
    assert target.exists() is target_exists
    if target_exists:
        assert target.read_bytes() == before


@as_root
def test_a_spool_file_of_another_user_is_never_adopted(open_sqlite: Factory) -> None:
    """A spool planted in our spool directory by another user is not sent with our key."""
    outbox = open_sqlite()
    assert outbox.path is not None
    planted = spool_dir_of(outbox.path) / f"{'9' * 32}.sqlite3"
    with sqlite3.connect(planted) as raw:
        raw.execute(SPOOL_DDL)
        raw.execute("INSERT INTO spooled (event_id, body, enqueued_at) VALUES ('x', '{}', 1)")
    raw.close()
    os.chown(planted, OTHER_UID, OTHER_UID)
    assert outbox.absorb() == 0
    assert outbox.pending_count() == 0


def test_a_spool_directory_removed_by_a_closing_outbox_meanwhile_is_made_again(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closing outbox removes the empty spool directory; one opening at that instant makes it
    again instead of falling back to memory (1 of 50 parallel `track` processes did)."""
    from mosaic_telemetry._store import files

    spool_dir = tmp_path / "outbox.sqlite3.spool"
    real_mkdir = os.mkdir
    raced: list[bool] = []

    def mkdir_then_lose_it(path: str | os.PathLike[str], mode: int = 0o777) -> None:
        real_mkdir(path, mode)
        if not raced:  # another process's close() removes it right after we made it
            raced.append(True)
            os.rmdir(path)

    monkeypatch.setattr("mosaic_telemetry._store.files.os.mkdir", mkdir_then_lose_it)
    files.prepare_spool_dir(spool_dir)
    assert raced == [True] and spool_dir.is_dir()
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
