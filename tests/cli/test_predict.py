"""``predict``: one combination asked of the server; success decided by what the SDK returns."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from ..helpers import ANSWER
from .support import PREDICT, PREDICT_QUERY, run


def test_predict_prints_a_table_and_json(env: Path, server: FakeTelemetryServer) -> None:
    """predict queries the server and prints the distribution as a table, or one JSON object."""
    server.set_prediction(
        {
            "task_type": "implementation",
            "model": "claude-sonnet-4-5-20250929",
            "provider": "anthropic",
            "complexity": "medium",
        },
        ANSWER,
    )
    code, text = run(*PREDICT)
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "implementation / claude-sonnet-4-5-20250929 / anthropic / medium"
    assert lines[1].split() == ["p10", "p25", "median", "p75", "p90"]
    assert lines[2].split() == ["input", "tokens", "50000", "80000", "110000", "140000", "190000"]
    assert lines[4].split() == ["cost", "(USD)", "0.91", "1.50"]
    assert "1200 samples, confidence high" in text
    code, text = run(*PREDICT, "--json")
    data = json.loads(text)
    assert code == 0
    assert data["query"]["model"] == "claude-sonnet-4-5-20250929"
    assert data["prediction"]["input_tokens"]["median"] == 110000
    assert data["metadata"]["sample_size"] == 1200
    assert server.prediction_queries[-1]["task_type"] == "implementation"


def test_predict_without_data_says_so(env: Path) -> None:
    """A combination the server knows nothing about is an answer, not an error."""
    code, text = run(*PREDICT)
    assert code == 0
    assert "no prediction for this combination yet (0 samples; no data)" in text


def test_predict_with_the_server_down_is_one_error_line(
    env: Path, server: FakeTelemetryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """predict against a stopped server exits 1 with the transport's reason on one line."""
    server.stop()
    code, text = run(*PREDICT)
    err = capsys.readouterr().err
    assert code == 1 and text == ""
    assert err.startswith("mosaic-telemetry: error: no prediction: prediction refresh failed")
    assert err.count("\n") == 1


def test_predict_rejects_unknown_enum_values(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown --provider is a usage error listing the choices."""
    argv = [*PREDICT]
    argv[argv.index("anthropic")] = "acme"
    assert run(*argv)[0] == 2
    assert "invalid choice: 'acme'" in capsys.readouterr().err


def test_a_warning_beside_a_fresh_answer_is_not_a_failure(
    env: Path, server: FakeTelemetryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fresh answer with an SDK warning about the reply (an extra result) is shown as fresh."""
    extra = copy.deepcopy(ANSWER)
    server.script_predictions(ScriptedReply(status=200, body={"results": [ANSWER, extra]}))
    code, text = run(*PREDICT, "--json")
    assert code == 0
    assert json.loads(text)["metadata"]["sample_size"] == 1200
    assert capsys.readouterr().err == ""


def test_a_failed_refresh_shows_the_cached_answer_with_the_reason(
    env: Path, server: FakeTelemetryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """When the server fails after an earlier answer was cached, that answer is shown, warned."""
    server.set_prediction(PREDICT_QUERY, ANSWER)
    assert run(*PREDICT)[0] == 0
    capsys.readouterr()
    server.script_predictions(ScriptedReply(status=500))
    code, text = run(*PREDICT)
    err = capsys.readouterr().err
    assert code == 0 and "1200 samples, confidence high" in text
    assert err.startswith("mosaic-telemetry: warning: prediction refresh failed")
    assert err.endswith("; showing the cached answer\n") and err.count("\n") == 1


def test_an_unreadable_reply_without_a_cached_answer_is_an_error(
    env: Path, server: FakeTelemetryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reply whose only result cannot be read: exit 1 with the SDK's reason on one line."""
    bad = copy.deepcopy(ANSWER)
    bad["metadata"]["sample_size"] = "lots"
    server.script_predictions(ScriptedReply(status=200, body={"results": [bad]}))
    code, text = run(*PREDICT)
    err = capsys.readouterr().err
    assert code == 1 and text == ""
    assert err.startswith("mosaic-telemetry: error: no prediction: skipping an unreadable")
    assert err.count("\n") == 1


def test_no_answer_and_no_log_line_still_fails(
    env: Path, server: FakeTelemetryServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 2xx with no results logs a count warning at most; the verdict comes from the count."""
    server.script_predictions(ScriptedReply(status=200, body={"results": []}))
    code, _ = run(*PREDICT)
    assert code == 1
    assert capsys.readouterr().err.startswith("mosaic-telemetry: error: no prediction: ")
