"""The benchmark runner runs."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_quick_run_prints_the_table_and_exits_0() -> None:
    """`python benchmarks/run.py --quick` finishes, exits 0 and prints every figure's row."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOSAIC_TELEMETRY_")}
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "| figure | ours | baseline / peer | ratio | target | result |" in out
    for figure in ("| 1. track()", "| 2. track()", "| 3. delivery", "| 4. track()", "| 5. "):
        assert figure in out, figure
    assert "ERROR" not in out
    assert "- command: `python benchmarks/run.py --quick`" in out
