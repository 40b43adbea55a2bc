"""Helpers of the command-line tests: run main() in-process, snapshot a directory."""

from __future__ import annotations

import hashlib
import io
import sqlite3
from pathlib import Path

from mosaic_telemetry.cli import main

PREDICT = [
    "predict",
    "--task-type",
    "implementation",
    "--model",
    "claude-sonnet-4-5-20250929",
    "--provider",
    "anthropic",
    "--complexity",
    "medium",
]
#: The query PREDICT asks, as the server's set_prediction() takes it.
PREDICT_QUERY = {
    "task_type": "implementation",
    "model": "claude-sonnet-4-5-20250929",
    "provider": "anthropic",
    "complexity": "medium",
}


class TTY(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def run(*argv: str, out: io.StringIO | None = None) -> tuple[int, str]:
    """Run main(argv) and return (exit code, what it printed on its output stream)."""
    stream = out if out is not None else io.StringIO()
    code = main(list(argv), out=stream)
    return code, stream.getvalue()


def snapshot(directory: Path) -> dict[str, tuple[str, int, int]]:
    """Name -> (sha256, size, mtime_ns) of every file in ``directory``."""
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.iterdir())
    }


def write_foreign(path: Path, statements: list[str]) -> None:
    """Create an SQLite file by hand (and close it, so no side files remain)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()
