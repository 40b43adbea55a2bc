"""``serve``: the test server in the foreground, driven as a real process over real sockets."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
import requests

from mosaic_telemetry.cli.serve import describe
from mosaic_telemetry.testing import RecordedRequest
from mosaic_telemetry.testing.replies import PARSE_BODY

from ..fake_wire import EVENTS_PATH, KEY, OTHER_KEY, valid_event
from ..helpers import child_env
from .support import run

PREDICTIONS = Path(__file__).resolve().parents[2] / "docs" / "examples" / "predictions.json"


@contextmanager
def serving(*extra: str) -> Iterator[tuple[subprocess.Popen[str], str, IO[str]]]:
    """``python -m mosaic_telemetry serve`` in a child, once it printed "listening on"."""
    child = subprocess.Popen(
        [sys.executable, "-m", "mosaic_telemetry", "serve", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        first = child.stdout.readline()
        assert first.startswith("listening on http://127.0.0.1:"), first + child.stderr.read()
        yield child, first.split()[2], child.stdout
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()
        child.stderr.close()


def post(url: str, events: Sequence[object], key: str = KEY) -> requests.Response:
    """POST a batch with a Bearer key."""
    headers = {"Authorization": f"Bearer {key}"}
    return requests.post(
        url + EVENTS_PATH, json={"events": list(events)}, headers=headers, timeout=10
    )


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serves_stores_lists_and_stops_cleanly(stop: signal.Signals) -> None:
    """A batch POSTed to the process is stored, listed at /_fake/events, logged on one line;
    SIGTERM or SIGINT ends the process with status 0 and a summary line."""
    events = [valid_event(), valid_event(), valid_event(model="")]
    with serving() as (child, url, stdout):
        reply = post(url, events)
        listed = requests.get(url + "/_fake/events", timeout=10)

        child.send_signal(stop)
        code = child.wait(60)
        rest = stdout.read()

    assert (reply.status_code, reply.json()["accepted"]) == (202, 2)
    assert listed.json() == events[:2]
    assert code == 0
    lines = rest.splitlines()
    assert lines[0].endswith(f"POST {EVENTS_PATH}  3 events  202 accepted 2, rejected 1")
    assert lines[-1] == "stopped (events stored: 2, requests: 1)"


def test_api_key_refuses_another_key_and_is_never_printed() -> None:
    """--api-key: another well-formed key is answered 403; the key appears in no output."""
    with serving("--api-key", KEY) as (child, url, out):
        wrong = post(url, [valid_event()], key=OTHER_KEY)
        right = post(url, [valid_event()])
        child.send_signal(signal.SIGTERM)
        assert child.wait(60) == 0
        rest = out.read()

    assert (wrong.status_code, right.status_code) == (403, 202)
    assert "403 API key not valid for this instance" in rest
    assert KEY not in rest


def test_fail_rate_and_latency_are_applied() -> None:
    """--fail-rate 1 answers every batch 503 (with --retry-after) and stores nothing."""
    with serving("--fail-rate", "1", "--retry-after", "7", "--latency", "0.01") as (
        child,
        url,
        out,
    ):
        failed = post(url, [valid_event()])
        listed = requests.get(url + "/_fake/events", timeout=10)
        child.send_signal(signal.SIGTERM)
        assert child.wait(60) == 0
        rest = out.read()

    assert (failed.status_code, failed.headers["Retry-After"], listed.json()) == (503, "7", [])
    assert "503 simulated failure (fail_rate)" in rest


def test_predictions_file_seeds_the_answers() -> None:
    """--predictions FILE (the docs' example file): its query is answered with its response."""
    answers = json.loads(PREDICTIONS.read_text())
    with serving("--predictions", str(PREDICTIONS)) as (child, url, out):
        reply = requests.post(
            url + "/v1/predictions/batch", json={"queries": [answers[0]["query"]]}, timeout=10
        )
        child.send_signal(signal.SIGTERM)
        assert child.wait(60) == 0
        rest = out.read()

    assert reply.json() == {"results": [answers[0]["response"]]}
    assert "POST /v1/predictions/batch  1 query  200" in rest


@pytest.mark.parametrize(
    ("content", "named"),
    [("{not json", "Expecting property name"), ('{"a": 1}', "a JSON list"), ("[1]", "item 0")],
)
def test_a_bad_predictions_file_is_named(
    tmp_path: Path, content: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A predictions file that is not a list of query/response pairs ends with status 1."""
    path = tmp_path / "answers.json"
    path.write_text(content)

    code, _ = run("serve", "--predictions", str(path))

    err = capsys.readouterr().err
    assert code == 1
    assert f"--predictions {path}" in err and named in err


def test_a_port_in_use_is_a_clear_error() -> None:
    """A port another socket holds ends the command with status 1 and one line on stderr."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "mosaic_telemetry", "serve", "--port", port],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=60,
        )

    assert done.returncode == 1
    assert done.stderr.startswith(f"mosaic-telemetry: error: cannot listen on 127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--api-key", "not-a-key"], "must be 64 hex characters"),
        (["--fail-rate", "1.5"], "between 0 and 1"),
        (["--latency", "-1"], "0 or more seconds"),
        (["--port", "70000"], "0..65535"),
    ],
)
def test_bad_options_are_usage_errors(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Impossible options exit 2 naming the rule, and a bad key is never echoed."""
    code, _ = run("serve", *argv)

    err = capsys.readouterr().err
    assert code == 2
    assert named in err
    assert "not-a-key" not in err


def record(status: int, body: bytes, reply: bytes, method: str = "POST") -> RecordedRequest:
    """A recorded request to the events path."""
    return RecordedRequest(method, EVENTS_PATH, {}, body, PARSE_BODY, status, 0.0, reply=reply)


def test_describe_reads_counts_details_and_lost_replies() -> None:
    """Each request line names what arrived and what was answered, counts or detail."""
    one = b'{"events": [{}]}'
    verdicts = b'{"accepted": 1, "rejected": 0, "results": [{"status": "duplicate"}]}'

    assert describe(record(202, one, verdicts)) == f"POST {EVENTS_PATH}  1 event  202 duplicate 1"
    assert describe(record(400, b"{", b'{"detail": "body is\\nnot JSON"}')) == (
        f"POST {EVENTS_PATH}  400 body is not JSON"
    )
    assert describe(record(0, one, b"")) == (
        f"POST {EVENTS_PATH}  1 event  no reply (connection dropped or held)"
    )
    assert describe(record(200, b"", b"<html>", method="GET")) == f"GET {EVENTS_PATH}  200"
