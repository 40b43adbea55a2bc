"""Tests of mosaic_telemetry.testing.replies: what a scripted reply sends and stores."""

from __future__ import annotations

import pytest

from mosaic_telemetry.testing import RecordedRequest, ScriptedReply, oracle
from mosaic_telemetry.testing.replies import PARSE_BODY, Faults, scripted_body, stores_events

VERDICTS = oracle.Reply(202, {"accepted": 1, "rejected": 0, "results": ["..."]})
INVALID = [{"loc": ["body", "events", 0, "model"], "msg": "bad", "type": "value_error"}]


def test_contradictions_and_impossible_values_are_refused() -> None:
    """drop+hang, cut_after with drop or hang, a status outside 200..599, a negative delay fail."""
    with pytest.raises(ValueError, match="drop and hang"):
        ScriptedReply(drop=True, hang=True)
    with pytest.raises(ValueError, match="cut_after"):
        ScriptedReply(cut_after=3, hang=True)
    with pytest.raises(ValueError, match="status"):
        ScriptedReply(status=99)
    with pytest.raises(ValueError, match="delay"):
        ScriptedReply(delay=-1)


def test_headers_are_copied() -> None:
    """A later change to the caller's headers dict does not change the scripted reply."""
    headers = {"Retry-After": "1"}
    reply = ScriptedReply(status=429, headers=headers)
    headers["Retry-After"] = "99"

    assert reply.headers == {"Retry-After": "1"}


@pytest.mark.parametrize(
    ("script", "stores"),
    [
        (None, True),
        (ScriptedReply(), True),
        (ScriptedReply(status=200, headers={"X": "y"}), True),
        (ScriptedReply(status=500), False),
        (ScriptedReply(status=500, store=True), True),
        (ScriptedReply(status=202, body={"accepted": 1}), False),
        (ScriptedReply(drop=True), False),
        (ScriptedReply(hang=True, store=True), True),
        (ScriptedReply(cut_after=10), False),
        (ScriptedReply(delay=5.0), True),
    ],
)
def test_which_replies_store_the_events(script: ScriptedReply | None, stores: bool) -> None:
    """Only a normal 2xx stores, unless store=True; a custom body or a lost reply does not."""
    assert stores_events(script) is stores


def test_scripted_bodies() -> None:
    """A custom body wins; a 2xx reuses the real verdicts; 422 the real errors; else a detail."""
    path = oracle.EVENTS_PATH
    refused = oracle.Reply(401, {"detail": "no key"}, INVALID)

    assert scripted_body(ScriptedReply(body=b"raw"), VERDICTS, path) == b"raw"
    assert scripted_body(ScriptedReply(status=200), VERDICTS, path) == VERDICTS.body
    assert scripted_body(ScriptedReply(status=200), refused, path) == oracle.empty_verdicts(path)
    assert scripted_body(ScriptedReply(status=422), refused, path) == {"detail": INVALID}
    assert scripted_body(ScriptedReply(status=429), VERDICTS, path) == {
        "detail": "Too Many Requests (scripted)"
    }
    assert scripted_body(ScriptedReply(status=599), VERDICTS, path) == {
        "detail": "HTTP 599 (scripted)"
    }
    predictions = oracle.PREDICTIONS_PATH
    assert scripted_body(ScriptedReply(status=422), refused, predictions) != {"detail": INVALID}
    assert scripted_body(ScriptedReply(status=503), refused, predictions) == {
        "detail": "Service Unavailable (scripted)"
    }


def record(body: bytes, json: object = PARSE_BODY) -> RecordedRequest:
    """A recorded POST of ``body``."""
    return RecordedRequest("POST", "/", {}, body, json, 202, 0.0)


def test_recorded_json_is_parsed_from_the_body_once() -> None:
    """json is read from the body on first access and kept; a body that is not JSON is None."""
    recorded = record(b'{"events": [1]}')

    first = recorded.json
    first["events"].append(2)

    assert recorded.json is first
    assert recorded.json == {"events": [1, 2]}
    assert record(b"\xff not json").json is None
    assert record(b"").json is None


def test_recorded_json_given_explicitly_is_kept() -> None:
    """A RecordedRequest built with json=... returns that value, as before the lazy parse."""
    assert record(b"ignored", json={"given": True}).json == {"given": True}
    assert record(b"{}", json=None).json is None


def test_faults_fail_only_events_batches_and_repeat_with_a_seed() -> None:
    """fail_rate draws 503s for events batches only; the same seed draws the same ones."""
    never, always = Faults(fail_rate=0.0), Faults(fail_rate=1.0)
    assert never.draw(oracle.EVENTS_PATH) is None
    failure = always.draw(oracle.EVENTS_PATH)
    assert failure is not None and failure.status == 503 and not stores_events(failure)
    assert always.draw(oracle.PREDICTIONS_PATH) is None

    def run(seed: int) -> list[bool]:
        faults = Faults(fail_rate=0.5, seed=seed)
        return [faults.draw(oracle.EVENTS_PATH) is not None for _ in range(200)]

    assert run(7) == run(7)
    assert 50 < sum(run(7)) < 150


@pytest.mark.parametrize(
    ("latency", "fail_rate", "named"),
    [
        (-1.0, 0.0, "latency"),
        (float("inf"), 0.0, "latency"),
        (0, 1.5, "fail_rate"),
        (0, -0.1, "fail_rate"),
    ],
)
def test_faults_refuse_impossible_settings(latency: float, fail_rate: float, named: str) -> None:
    """A negative or infinite latency, or a fail rate outside 0..1, is refused by name."""
    with pytest.raises(ValueError, match=named):
        Faults(latency=latency, fail_rate=fail_rate)


def test_faults_send_retry_after_when_asked() -> None:
    """retry_after puts Retry-After on the simulated 503s; a fraction of a second is refused."""
    failure = Faults(fail_rate=1.0, retry_after=120).draw(oracle.EVENTS_PATH)

    assert failure is not None and failure.headers == {"Retry-After": "120"}
    with pytest.raises(ValueError, match="retry_after"):
        Faults(retry_after=1.5)  # type: ignore[arg-type]
