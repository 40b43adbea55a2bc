"""Tests of the mosaic_telemetry.testing door: its public names and the pytest plugin."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from mosaic_telemetry import testing
from mosaic_telemetry._delivery import seam
from mosaic_telemetry.testing import (
    FakeTelemetryServer,
    fake_telemetry_server,  # noqa: F401 - the plugin's fixture, used by a test below
)

from .fake_wire import EVENTS_PATH, post_events, valid_event
from .helpers import INSTANCE_ID, child_env

# The plugin itself (pytest_plugins = ["mosaic_telemetry.testing"]) is exercised in a nested
# pytest run: listing it here would import it after assertion rewriting could apply.
pytest_plugins = ["pytester"]

PUBLIC = {
    "FakeTelemetryServer",
    "MockTransport",
    "RecordedRequest",
    "ScriptedReply",
    "TransportRequest",
    "TransportResponse",
    "example_event_builder",
    "fake_telemetry_server",
}


def test_all_is_the_public_surface() -> None:
    """__all__ names exactly the documented helpers, each defined, the seam types re-exported."""
    assert set(testing.__all__) == PUBLIC
    exposed = {name for name in vars(testing) if not name.startswith("_")}
    assert set(testing.__all__) <= exposed
    assert (testing.TransportRequest, testing.TransportResponse) == (
        seam.TransportRequest,
        seam.TransportResponse,
    )


def test_example_event_builder_builds_a_fresh_valid_event() -> None:
    """The example builder makes complete events with new ids, for the given instance."""
    first = testing.example_event_builder(INSTANCE_ID).build()
    second = testing.example_event_builder(INSTANCE_ID).build()

    assert str(first.instance_id) == INSTANCE_ID
    assert first.event_id != second.event_id
    assert first.model == "claude-sonnet-4-5-20250929"


def test_importable_without_pytest() -> None:
    """Without pytest installed the module imports, without the fixture."""
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import mosaic_telemetry.testing as t\n"
        "print('fake_telemetry_server' in t.__all__, hasattr(t, 'fake_telemetry_server'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, check=True
    )

    assert done.stdout.split() == ["False", "False"]


def test_plugin_fixture_yields_a_started_server(
    fake_telemetry_server: FakeTelemetryServer,  # noqa: F811
) -> None:
    """The fake_telemetry_server fixture yields a running server."""
    assert fake_telemetry_server.is_running
    assert post_events(fake_telemetry_server, [valid_event()]).status_code == 202


def test_plugin_fixture_stops_the_server_after_the_test(pytester: pytest.Pytester) -> None:
    """A user's suite enabling the plugin gets a working server that is stopped after each test."""
    pytester.makeconftest('pytest_plugins = ["mosaic_telemetry.testing"]\n')
    pytester.makepyfile(
        """
        import pathlib

        def test_uses_fixture(fake_telemetry_server):
            pathlib.Path("url.txt").write_text(fake_telemetry_server.url)
            assert fake_telemetry_server.events == []
        """
    )

    result = pytester.runpytest_inprocess(
        "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"
    )

    result.assert_outcomes(passed=1)
    url = (pytester.path / "url.txt").read_text()
    with pytest.raises(requests.ConnectionError):
        requests.post(url + EVENTS_PATH, json={"events": []}, timeout=2)
