"""``demo``: tracks into a temp outbox and delivers to a loopback server."""

from __future__ import annotations

from .support import run


def test_demo_still_delivers() -> None:
    """The demo command tracks into a temp outbox and delivers everything."""
    code, text = run("demo", "--events", "3")
    assert code == 0
    assert "flushed: delivered 3, remaining 0; the server stored 3 events" in text
