"""The release helper's version formats (PEP 440 stable and dev)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mosaic_telemetry._release import dev_version, main, stable_version, write_version


def test_dev_version_is_pep440_utc_timestamp() -> None:
    """A dev build is X.Y.Z.devYYYYMMDDHHMMSS of the UTC instant, whatever the input zone."""
    local = datetime(2026, 2, 15, 6, 59, 1, tzinfo=timezone(timedelta(hours=2)))
    assert dev_version("0.1.0", local) == "0.1.0.dev20260215045901"


def test_dev_version_defaults_to_now() -> None:
    """Without a time, the current UTC time is used."""
    assert re.fullmatch(r"1\.2\.3\.dev20\d{12}", dev_version("1.2.3"))


@pytest.mark.parametrize("bad", ["1.2", "01.2.3", "1.2.3.dev1", "v1.2.3", ""])
def test_stable_version_rejects_other_shapes(bad: str) -> None:
    """Only X.Y.Z without leading zeros is a stable version."""
    with pytest.raises(ValueError, match=r"X\.Y\.Z"):
        stable_version(bad)


def test_main_reads_and_writes_setup_cfg(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dev --write stores a dev version; a later stable run strips the dev suffix again."""
    cfg = tmp_path / "setup.cfg"
    cfg.write_text("[metadata]\nname = x\nversion = 0.4.0\n")
    assert main(["--dev", "--write", "--setup-cfg", str(cfg)]) == 0
    printed = capsys.readouterr().out.strip()
    assert re.fullmatch(r"0\.4\.0\.dev\d{14}", printed)
    assert f"version = {printed}" in cfg.read_text()
    assert main(["--write", "--setup-cfg", str(cfg)]) == 0
    assert capsys.readouterr().out.strip() == "0.4.0"
    write_version(cfg, "0.5.0")
    assert "version = 0.5.0" in cfg.read_text()


def test_repository_version_is_stable() -> None:
    """The committed setup.cfg carries a stable X.Y.Z version."""
    cfg = Path(__file__).resolve().parent.parent / "setup.cfg"
    line = next(x for x in cfg.read_text().splitlines() if x.startswith("version ="))
    assert stable_version(line.split("=", 1)[1].strip()) == "0.1.0"
