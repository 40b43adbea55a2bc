"""client.task(...) and @client.tracked(...) over real sockets and real outbox files."""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import os
import sqlite3
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest

from mosaic_telemetry import (
    Complexity,
    EventBuilder,
    Harness,
    Outcome,
    PredictionQuery,
    Provider,
    QualityGate,
    TaskRecorder,
    TaskType,
    TelemetryClient,
    TelemetryConfig,
)
from mosaic_telemetry.testing import FakeTelemetryServer, ScriptedReply

from .helpers import ANSWER

Config = Callable[..., TelemetryConfig]
MODEL = "claude-sonnet-4-5-20250929"
KIND: dict[str, Any] = {
    "model": MODEL,
    "provider": Provider.ANTHROPIC,
    "harness": Harness.CLAUDE_CODE,
    "complexity": Complexity.MEDIUM,
}
QUERY = PredictionQuery(
    task_type=TaskType.IMPLEMENTATION,
    model=MODEL,
    provider=Provider.ANTHROPIC,
    complexity=Complexity.MEDIUM,
)


class FakeMonotonic:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 5_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeMonotonic:
    """The injected monotonic clock of the client."""
    return FakeMonotonic()


@pytest.fixture
def make_client(
    make_config: Config, clock: FakeMonotonic
) -> Iterator[Callable[..., TelemetryClient]]:
    """Clients (not started) with the test's clock; config keywords override.

    At the end each waits for its background prediction fetch, while the server still runs,
    so no fetch of this test logs into the next one.
    """
    made: list[TelemetryClient] = []

    def make(monotonic: Callable[[], float] = clock, **overrides: Any) -> TelemetryClient:
        client = TelemetryClient(make_config(**overrides), monotonic=monotonic)
        made.append(client)
        return client

    yield make
    for client in made:
        if client._tasks.prefetcher is not None:
            client._tasks.prefetcher.wait_idle(timeout=30)
        client.stop()


@pytest.fixture
def client(make_client: Callable[..., TelemetryClient]) -> TelemetryClient:
    """A client that is not started: tasks land in the outbox and stay there."""
    return make_client()


def finish(task: TaskRecorder, n: int = 1) -> None:
    """Set the fields a task must set before it ends (values derived from ``n``)."""
    task.tokens(actual_in=1000 * n, actual_out=100 * n).cost(actual=10 * n)
    task.quality(passed=True, gates_run=[QualityGate.TEST])


def stored(outbox_path: Path) -> dict[str, dict[str, Any]]:
    """The events on disk, by event_id, read with a separate connection: the outbox's pending
    rows and those in spool files (track() met the outbox locked by another thread)."""
    with sqlite3.connect(outbox_path) as db:
        rows = db.execute("SELECT event_id, body FROM events").fetchall()
    for spool in outbox_path.parent.glob(f"{outbox_path.name}.spool/*.sqlite3"):
        with sqlite3.connect(spool) as db:
            rows += db.execute("SELECT event_id, body FROM spooled").fetchall()
    return {event_id: json.loads(body) for event_id, body in rows}


def delivered(client: TelemetryClient, server: FakeTelemetryServer) -> list[dict[str, Any]]:
    """Start the client, drain the outbox to the server, return what the server stored."""
    client.start()
    result = client.flush(timeout=30)
    assert (result.remaining, result.timed_out) == (0, False)
    return server.events


# --- the event ----------------------------------------------------------------------------------
def test_block_writes_one_event_to_the_outbox_and_it_is_delivered(
    client: TelemetryClient, server: FakeTelemetryServer, outbox_path: Path, clock: FakeMonotonic
) -> None:
    """On exit the event is on disk before anything is sent, then reaches the server as built."""
    with client.task(TaskType.IMPLEMENTATION, **KIND, language="python") as task:
        clock.now += 45.0
        finish(task)
    on_disk = stored(outbox_path)
    assert list(on_disk) == [str(task.event_id)]
    assert server.events == []
    (sent,) = delivered(client, server)
    assert sent == on_disk[str(task.event_id)]
    expected = {
        "task_type": "implementation",
        "model": MODEL,
        "provider": "anthropic",
        "harness": "claude_code",
        "complexity": "medium",
        "language": "python",
        "task_duration_ms": 45_000,
        "outcome": "success",
        "actual_input_tokens": 1000,
        "actual_output_tokens": 100,
        "actual_cost_usd_micros": 10,
        "quality_gate_passed": True,
        "quality_gates_run": ["test"],
        "quality_gates_failed": [],
        "estimated_input_tokens": 0,
        "estimated_output_tokens": 0,
        "estimated_cost_usd_micros": 0,
        "context_compactions": 0,
        "context_rotations": 0,
        "context_utilization_final": 0.0,
        "retry_count": 0,
        "repo_size_category": None,
    }
    assert {key: sent[key] for key in expected} == expected


def test_every_setter_reaches_the_event(client: TelemetryClient, outbox_path: Path) -> None:
    """Values set on the recorder (strings too) are the event's, not the defaults."""
    with client.task("testing", **KIND, repo_size="large") as task:
        task.tokens(estimated_in=7, estimated_out=8, actual_in=9, actual_out=10)
        task.cost(estimated=11, actual=12)
        task.quality(passed=False, gates_run=["build", "test"], gates_failed=["test"])
        task.context(compactions=3, rotations=1, utilization=0.5)
        task.retry_count(2)
        task.outcome("partial")
    body = stored(outbox_path)[str(task.event_id)]
    assert {k: body[k] for k in ("estimated_input_tokens", "estimated_cost_usd_micros")} == {
        "estimated_input_tokens": 7,
        "estimated_cost_usd_micros": 11,
    }
    assert body["quality_gates_run"] == ["build", "test"]
    assert body["quality_gates_failed"] == ["test"]
    assert (body["context_compactions"], body["context_utilization_final"]) == (3, 0.5)
    assert (body["retry_count"], body["outcome"], body["repo_size_category"]) == (
        2,
        "partial",
        "large",
    )
    assert task.event is not None and task.event.task_type is TaskType.TESTING


# --- duration -----------------------------------------------------------------------------------
def _sync_with(client: TelemetryClient, body: Callable[[TaskRecorder], None]) -> TaskRecorder:
    with client.task(TaskType.IMPLEMENTATION, **KIND) as task:
        body(task)
    return task


def _async_with(client: TelemetryClient, body: Callable[[TaskRecorder], None]) -> TaskRecorder:
    async def run() -> TaskRecorder:
        async with client.task(TaskType.IMPLEMENTATION, **KIND) as task:
            await asyncio.sleep(0)  # a real suspension point inside the block
            body(task)
        return task

    return asyncio.run(run())


def _sync_decorator(client: TelemetryClient, body: Callable[[TaskRecorder], None]) -> TaskRecorder:
    @client.tracked(TaskType.IMPLEMENTATION, **KIND)
    def work() -> TaskRecorder:
        task = TaskRecorder.current()
        assert task is not None
        body(task)
        return task

    return work()


def _async_decorator(client: TelemetryClient, body: Callable[[TaskRecorder], None]) -> TaskRecorder:
    @client.tracked(TaskType.IMPLEMENTATION, **KIND)
    async def work() -> TaskRecorder:
        await asyncio.sleep(0)
        task = TaskRecorder.current()
        assert task is not None
        body(task)
        return task

    return asyncio.run(work())


SHAPES = [_sync_with, _async_with, _sync_decorator, _async_decorator]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.__name__.strip("_"))
def test_duration_is_measured_with_the_injected_monotonic_clock(
    shape: Callable[..., TaskRecorder],
    client: TelemetryClient,
    clock: FakeMonotonic,
    outbox_path: Path,
) -> None:
    """1.2345 s on the injected clock is 1234 or 1235 ms, whatever the wall clock did."""

    def body(task: TaskRecorder) -> None:
        clock.now += 1.2345
        finish(task)

    task = shape(client, body)
    duration = stored(outbox_path)[str(task.event_id)]["task_duration_ms"]
    assert abs(duration - 1234.5) <= 0.5


# --- outcome ------------------------------------------------------------------------------------
class Interrupted(KeyboardInterrupt):
    """A KeyboardInterrupt the test can tell from a real one."""


def _group(*errors: Exception) -> BaseException:
    group: Any = getattr(builtins, "ExceptionGroup", None)
    if group is None:
        pytest.skip("exception groups need Python 3.11")
    result: BaseException = group("several", [*errors])
    return result


def _timeout_group() -> BaseException:
    return _group(TimeoutError("a"), asyncio.TimeoutError("b"))


def _mixed_group() -> BaseException:
    return _group(TimeoutError("a"), ValueError("b"))


OUTCOMES: list[tuple[str, Callable[[], BaseException] | None, str | None, str]] = [
    ("no exception", None, None, "success"),
    ("ValueError", lambda: ValueError("boom"), None, "failure"),
    ("TimeoutError", lambda: TimeoutError("slow"), None, "timeout"),
    ("asyncio.TimeoutError", lambda: asyncio.TimeoutError(), None, "timeout"),
    ("OSError subclass of TimeoutError", lambda: TimeoutError(110, "timed out"), None, "timeout"),
    ("KeyboardInterrupt", lambda: Interrupted(), None, "failure"),
    ("SystemExit(0)", lambda: SystemExit(0), None, "success"),
    ("SystemExit(2)", lambda: SystemExit(2), None, "failure"),
    ("group of timeouts", _timeout_group, None, "timeout"),
    ("mixed group", _mixed_group, None, "failure"),
    ("explicit wins over an exception", lambda: ValueError("x"), "partial", "partial"),
    ("explicit wins over a timeout", lambda: TimeoutError(), "failure", "failure"),
    ("explicit wins over success", None, "timeout", "timeout"),
]


@pytest.mark.parametrize(
    ("raised", "explicit", "expected"), [o[1:] for o in OUTCOMES], ids=[o[0] for o in OUTCOMES]
)
def test_outcome_rules(
    raised: Callable[[], BaseException] | None,
    explicit: str | None,
    expected: str,
    client: TelemetryClient,
    outbox_path: Path,
) -> None:
    """success / failure / timeout from how the block ended; task.outcome() always wins."""
    error = raised() if raised else None
    caught: BaseException | None = None
    try:
        with client.task(TaskType.IMPLEMENTATION, **KIND) as task:
            finish(task)
            if explicit:
                task.outcome(explicit)
            if error is not None:
                raise error
    except BaseException as exc:
        caught = exc
    assert caught is error
    assert stored(outbox_path)[str(task.event_id)]["outcome"] == expected


def test_asyncio_wait_for_timeout_inside_the_block_is_a_timeout(
    client: TelemetryClient, outbox_path: Path
) -> None:
    """A real asyncio.wait_for that expires inside `async with client.task` gives "timeout"."""

    async def run() -> TaskRecorder:
        async with client.task(TaskType.IMPLEMENTATION, **KIND) as task:
            finish(task)
            await asyncio.wait_for(asyncio.Event().wait(), timeout=0)
        return task  # pragma: no cover - wait_for raises

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(run())
    (body,) = stored(outbox_path).values()
    assert body["outcome"] == "timeout"


# --- estimates ----------------------------------------------------------------------------------
def test_estimates_come_from_the_cached_prediction_medians(
    client: TelemetryClient, server: FakeTelemetryServer
) -> None:
    """With a seeded, cached prediction, unset estimates are its medians; set ones are kept."""
    server.set_prediction(QUERY, ANSWER)
    client.refresh_predictions_sync([QUERY])
    with client.task(TaskType.IMPLEMENTATION, **KIND) as first:
        assert first.prediction is not None and first.prediction.prediction is not None
        assert first.prediction.prediction.input_tokens.median == 110_000
        finish(first)
    with client.task(TaskType.IMPLEMENTATION, **KIND) as second:
        finish(second)
        second.tokens(estimated_out=5)
    events = {e["event_id"]: e for e in delivered(client, server)}
    estimates = ("estimated_input_tokens", "estimated_output_tokens", "estimated_cost_usd_micros")
    assert [events[str(first.event_id)][k] for k in estimates] == [110_000, 38_000, 910_000]
    assert [events[str(second.event_id)][k] for k in estimates] == [110_000, 5, 910_000]


def test_a_prediction_without_data_leaves_the_estimates_at_zero(
    client: TelemetryClient, server: FakeTelemetryServer, outbox_path: Path
) -> None:
    """The server's "no data" answer is cached, and the task says 0 (no estimate)."""
    client.refresh_predictions_sync([QUERY])  # nothing seeded: the server answers no data
    with client.task(TaskType.IMPLEMENTATION, **KIND) as task:
        assert task.prediction is not None and task.prediction.prediction is None
        finish(task)
    body = stored(outbox_path)[str(task.event_id)]
    assert [body["estimated_input_tokens"], body["estimated_cost_usd_micros"]] == [0, 0]


def test_absurd_medians_are_clamped_so_the_task_is_still_tracked(
    client: TelemetryClient, server: FakeTelemetryServer, outbox_path: Path
) -> None:
    """A server median above the schema's bound is sent as the bound, not as an invalid event."""
    answer = json.loads(json.dumps(ANSWER))
    answer["prediction"]["input_tokens"]["median"] = 99_000_000_000
    answer["prediction"]["cost_usd_micros"]["median"] = -5
    server.set_prediction(QUERY, answer)
    client.refresh_predictions_sync([QUERY])
    with client.task(TaskType.IMPLEMENTATION, **KIND) as task:
        finish(task)
    body = stored(outbox_path)[str(task.event_id)]
    assert [body["estimated_input_tokens"], body["estimated_cost_usd_micros"]] == [10_000_000, 0]


def test_missing_prediction_is_fetched_in_the_background_once_for_the_next_task(
    client: TelemetryClient, server: FakeTelemetryServer, outbox_path: Path
) -> None:
    """Tasks with nothing cached start at once; one query goes out; the next task has it."""
    server.set_prediction(QUERY, ANSWER)
    firsts = []
    for n in range(5):
        with client.task(TaskType.IMPLEMENTATION, **KIND) as task:
            finish(task, n + 1)
        firsts.append(task)
    assert firsts[0].prediction is None
    assert client._tasks.prefetcher is not None
    assert client._tasks.prefetcher.wait_idle(timeout=30)
    with client.task(TaskType.IMPLEMENTATION, **KIND) as later:
        finish(later)
    assert later.prediction is not None
    assert stored(outbox_path)[str(later.event_id)]["estimated_input_tokens"] == 110_000
    assert len(server.prediction_queries) == 1
    assert server.prediction_queries[0]["model"] == MODEL


def test_block_does_not_wait_for_a_hanging_prediction_server(
    make_client: Callable[..., TelemetryClient], server: FakeTelemetryServer, outbox_path: Path
) -> None:
    """The task is tracked while its prediction fetch still hangs in the background."""
    server.script_predictions(ScriptedReply(hang=True))
    client = make_client(request_timeout_seconds=30.0)
    with client.task(TaskType.IMPLEMENTATION, **KIND) as task:
        finish(task)
    assert str(task.event_id) in stored(outbox_path)
    assert server.wait_for_requests(1)
    assert client._tasks.prefetcher is not None
    assert not client._tasks.prefetcher.wait_idle(timeout=0)  # still hanging
    server.stop()  # releases the hanging handler; the fetch fails and is logged
    assert client._tasks.prefetcher.wait_idle(timeout=30)


# --- the user's exception, and telemetry's own --------------------------------------------------
def _boom() -> None:
    raise LookupError("the agent's own error")


def _raise_through(manager: AbstractContextManager[Any]) -> BaseException:
    try:
        with manager:
            _boom()
    except LookupError as exc:
        return exc
    raise AssertionError("not raised")  # pragma: no cover


def test_exception_and_traceback_are_unchanged_by_a_task_block(client: TelemetryClient) -> None:
    """The same code raises the same traceback with and without the task around it."""
    plain = _raise_through(nullcontext())
    tracked = _raise_through(client.task(TaskType.IMPLEMENTATION, **KIND))
    assert traceback.extract_tb(tracked.__traceback__) == traceback.extract_tb(plain.__traceback__)
    assert (tracked.__context__, tracked.__cause__) == (None, None)
    assert client.stats()["invalid"] == 1  # the block set nothing: not tracked, counted


def test_exception_and_traceback_are_unchanged_by_async_with(client: TelemetryClient) -> None:
    """`async with client.task` re-raises the block's exception object with its own frames."""

    async def run(manager: Any) -> BaseException:
        try:
            async with manager:
                _boom()
        except LookupError as exc:
            return exc
        raise AssertionError("not raised")  # pragma: no cover

    class Plain:
        async def __aenter__(self) -> None:
            return None

        async def __aexit__(self, *exc_info: object) -> None:
            return None

    plain = asyncio.run(run(Plain()))
    tracked = asyncio.run(run(client.task(TaskType.IMPLEMENTATION, **KIND)))
    assert traceback.extract_tb(tracked.__traceback__) == traceback.extract_tb(plain.__traceback__)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_decorator_adds_one_frame_and_keeps_the_exception(
    is_async: bool, client: TelemetryClient, outbox_path: Path
) -> None:
    """A decorated function's exception is the same object; its frames gain only the wrapper."""

    def plain() -> None:
        _boom()

    async def plain_async() -> None:
        _boom()

    func: Callable[[], Any] = plain_async if is_async else plain
    call: Callable[[Callable[[], Any]], Any] = (
        (lambda f: asyncio.run(f())) if is_async else (lambda f: f())
    )

    def raised(target: Callable[[], Any]) -> BaseException:
        with pytest.raises(LookupError) as info:
            call(target)
        return info.value

    bare = traceback.extract_tb(raised(func).__traceback__)
    wrapped = traceback.extract_tb(
        raised(client.tracked(TaskType.IMPLEMENTATION, **KIND)(func)).__traceback__
    )
    ours = [frame for frame in wrapped if frame.filename.endswith("mosaic_telemetry/_task.py")]
    assert [frame.name for frame in ours] == ["run_async" if is_async else "run"]
    assert [f for f in wrapped if f not in ours][-2:] == bare[-2:]  # func's frame and _boom's
    assert stored(outbox_path) == {}  # the function set nothing: counted, not tracked
    assert client.stats()["invalid"] == 1


def _fail(*args: object, **kwargs: object) -> Any:
    raise RuntimeError("telemetry's own failure")


BREAKAGES = ["track", "build", "get_prediction", "monotonic"]


@pytest.mark.parametrize("broken", BREAKAGES)
@pytest.mark.parametrize("user_error", [False, True], ids=["block-ok", "block-raises"])
def test_no_telemetry_exception_escapes_the_block(
    broken: str,
    user_error: bool,
    make_client: Callable[..., TelemetryClient],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """track(), build(), the cache or the clock failing: the block ends as it would without us."""
    client = make_client(**({"monotonic": _fail} if broken == "monotonic" else {}))
    if broken == "build":
        monkeypatch.setattr(EventBuilder, "build", _fail)
    elif broken in ("track", "get_prediction"):
        monkeypatch.setattr(client, broken, _fail)
    error = LookupError("the agent's")
    caught: BaseException | None = None
    with caplog.at_level(logging.ERROR, logger="mosaic_telemetry"):
        try:
            with client.task(TaskType.IMPLEMENTATION, **KIND) as task:
                finish(task)
                if user_error:
                    raise error
        except BaseException as exc:
            caught = exc
    assert caught is (error if user_error else None)
    if broken == "get_prediction":  # an estimate is optional: the task is still tracked
        assert task.event is not None and client.stats()["invalid"] == 0
    else:
        assert task.event is None and client.stats()["invalid"] == 1
    if broken != "monotonic":  # the rate limiter runs on the same broken clock: no log line
        assert "telemetry's own failure" in caplog.text


def test_unset_required_fields_are_logged_once_with_the_true_count(
    client: TelemetryClient,
    clock: FakeMonotonic,
    outbox_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three incomplete tasks: one error line naming the fields, held-back count on the next."""
    with caplog.at_level(logging.ERROR, logger="mosaic_telemetry"):
        for _ in range(3):
            with client.task(TaskType.IMPLEMENTATION, **KIND) as task:
                task.tokens(actual_in=5, actual_out=6)
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1
        assert "actual_cost_usd_micros: required" in lines[0]
        assert "quality_gate_passed: required" in lines[0]
        assert "actual_input_tokens" not in lines[0]
        clock.now += 61.0  # the rate limiter's interval runs on the injected clock too
        with client.task(TaskType.IMPLEMENTATION, **KIND) as task:
            pass
    assert len(caplog.records) == 2
    assert "(2 similar messages held back)" in caplog.records[1].getMessage()
    assert client.stats()["invalid"] == 4
    assert stored(outbox_path) == {}


def test_an_unreadable_task_kind_is_counted_not_raised(
    client: TelemetryClient, server: FakeTelemetryServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider that is no Provider: the block runs, no fetch is tried, the log names it."""
    with (
        caplog.at_level(logging.ERROR, logger="mosaic_telemetry"),
        client.task(TaskType.IMPLEMENTATION, **{**KIND, "provider": "nope"}) as task,
    ):
        finish(task)
    assert task.prediction is None and task.event is None
    assert "provider: cannot read 'nope'" in caplog.text
    assert client.stats()["invalid"] == 1
    assert client._tasks.prefetcher is not None and client._tasks.prefetcher.wait_idle(0)
    assert server.requests == []


def test_values_set_after_the_block_are_ignored_with_a_warning(
    client: TelemetryClient, outbox_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A late setter changes neither the tracked event nor the file."""
    with client.task(TaskType.IMPLEMENTATION, **KIND) as task:
        finish(task)
    with caplog.at_level(logging.WARNING, logger="mosaic_telemetry"):
        task.tokens(actual_in=999_999).outcome(Outcome.FAILURE)
    assert task.event is not None and task.event.actual_input_tokens == 1000
    assert stored(outbox_path)[str(task.event_id)]["outcome"] == "success"
    assert "already ended" in caplog.text


def test_a_recorder_entered_twice_records_only_the_first_block(
    client: TelemetryClient, outbox_path: Path
) -> None:
    """Re-entering the same recorder (nested or later) tracks nothing more and counts it."""
    task = client.task(TaskType.IMPLEMENTATION, **KIND)
    with task:
        finish(task)
        with task:
            pass
    with task:
        pass
    assert list(stored(outbox_path)) == [str(task.event_id)]
    assert client.stats()["invalid"] == 2


def test_disabled_client_runs_the_block_and_writes_nothing(
    make_client: Callable[..., TelemetryClient], outbox_path: Path
) -> None:
    """enabled=False: the block's code runs, nothing is built, counted or written."""
    client = make_client(enabled=False)
    ran = []
    with client.task(TaskType.IMPLEMENTATION, **KIND) as task:
        ran.append(True)
    assert ran == [True] and task.event is None
    assert client.stats()["invalid"] == 0
    assert not outbox_path.exists()


# --- isolation ----------------------------------------------------------------------------------
def test_nested_blocks_keep_their_own_fields(client: TelemetryClient, outbox_path: Path) -> None:
    """Inside an inner block current() is the inner task; the outer gets only its own values."""
    with client.task(TaskType.PLANNING, **KIND) as outer:
        assert TaskRecorder.current() is outer
        with client.task(TaskType.TESTING, **KIND) as inner:
            assert TaskRecorder.current() is inner
            finish(inner, 2)
        assert TaskRecorder.current() is outer
        finish(outer, 1)
    assert TaskRecorder.current() is None
    bodies = stored(outbox_path)
    assert bodies[str(outer.event_id)]["task_type"] == "planning"
    assert bodies[str(outer.event_id)]["actual_input_tokens"] == 1000
    assert bodies[str(inner.event_id)]["actual_input_tokens"] == 2000


def _consistent(bodies: dict[str, dict[str, Any]], count: int) -> None:
    seen = set()
    for body in bodies.values():
        n = int(body["model"].rsplit("-", 1)[1])
        assert (body["actual_input_tokens"], body["actual_output_tokens"]) == (1000 * n, 100 * n)
        assert body["actual_cost_usd_micros"] == 10 * n
        seen.add(n)
    assert seen == set(range(1, count + 1))


def test_concurrent_threads_never_mix_fields(client: TelemetryClient, outbox_path: Path) -> None:
    """16 threads, all inside their blocks at once, each setting its fields via current()."""
    count = 16
    inside = threading.Barrier(count)

    def work(n: int) -> None:
        with client.task(TaskType.IMPLEMENTATION, **{**KIND, "model": f"model-{n}"}):
            inside.wait(timeout=30)
            task = TaskRecorder.current()
            assert task is not None
            task.tokens(actual_in=1000 * n)
            inside.wait(timeout=30)
            task.tokens(actual_out=100 * n).cost(actual=10 * n).quality(passed=True)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, count + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    bodies = stored(outbox_path)
    assert len(bodies) == count
    _consistent(bodies, count)


def test_concurrent_asyncio_tasks_never_mix_fields(
    client: TelemetryClient, outbox_path: Path
) -> None:
    """16 asyncio tasks interleaved at awaits, with the decorator and with `async with`."""
    count = 16

    async def main() -> None:
        entered = 0
        all_in = asyncio.Event()

        async def rendezvous() -> None:
            nonlocal entered
            entered += 1
            if entered == count:
                all_in.set()
            await all_in.wait()

        async def with_block(n: int) -> None:
            async with client.task(TaskType.IMPLEMENTATION, **{**KIND, "model": f"m-{n}"}) as t:
                await rendezvous()
                finish(t, n)

        def decorated(n: int) -> Callable[[], Any]:
            @client.tracked(TaskType.IMPLEMENTATION, **{**KIND, "model": f"m-{n}"})
            async def work() -> None:
                await rendezvous()
                task = TaskRecorder.current()
                assert task is not None
                finish(task, n)

            return work

        await asyncio.gather(
            *(with_block(n) if n % 2 else decorated(n)() for n in range(1, count + 1))
        )

    asyncio.run(main())
    bodies = stored(outbox_path)
    assert len(bodies) == count
    _consistent(bodies, count)


# --- the decorator ------------------------------------------------------------------------------
def test_decorator_on_a_sync_function_keeps_its_result_and_name(
    client: TelemetryClient, outbox_path: Path, clock: FakeMonotonic
) -> None:
    """Each call is one task; the function returns as before and keeps its metadata."""

    @client.tracked(TaskType.DEBUGGING, **KIND)
    def fix(bug: str, *, attempts: int) -> str:
        """Fix a bug."""
        task = TaskRecorder.current()
        assert task is not None
        finish(task, attempts)
        clock.now += 2.0
        return f"fixed {bug}"

    assert fix("x", attempts=1) == "fixed x"
    assert fix("y", attempts=2) == "fixed y"
    assert (fix.__name__, fix.__doc__) == ("fix", "Fix a bug.")
    bodies = stored(outbox_path).values()
    assert sorted(b["actual_input_tokens"] for b in bodies) == [1000, 2000]
    assert {(b["task_type"], b["task_duration_ms"]) for b in bodies} == {("debugging", 2000)}


def test_decorator_on_a_coroutine_function_keeps_it_a_coroutine_function(
    client: TelemetryClient, outbox_path: Path
) -> None:
    """The wrapper of an async function is itself async and tracks when the await ends."""
    import inspect

    @client.tracked(TaskType.REFACTORING, **KIND)
    async def refactor() -> int:
        task = TaskRecorder.current()
        assert task is not None
        finish(task)
        await asyncio.sleep(0)
        return 42

    assert inspect.iscoroutinefunction(refactor)
    assert asyncio.run(refactor()) == 42
    ((body),) = stored(outbox_path).values()
    assert (body["task_type"], body["outcome"]) == ("refactoring", "success")


def test_decorator_refuses_generator_functions(client: TelemetryClient) -> None:
    """Timing a generator function would time only its creation: a clear TypeError instead."""

    def numbers() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        client.tracked(TaskType.TESTING, **KIND)(numbers)


# --- the prefetcher alone -----------------------------------------------------------------------
def test_prefetcher_asks_each_query_once_while_in_flight_and_pauses_after() -> None:
    """Requests during a fetch are merged; a query just tried waits out the pause."""
    from mosaic_telemetry._log import RateLimitedLogger
    from mosaic_telemetry._prefetch import PredictionPrefetcher

    clock = FakeMonotonic()
    gate, calls = threading.Event(), []
    started = threading.Event()

    def refresh(queries: Any) -> None:
        calls.append(list(queries))
        started.set()
        gate.wait(timeout=30)

    other = PredictionQuery(task_type="testing", model="m", provider="openai", complexity="low")
    prefetcher = PredictionPrefetcher(refresh, monotonic=clock, log=RateLimitedLogger())
    prefetcher.request(QUERY)
    assert started.wait(timeout=30)
    for _ in range(3):
        prefetcher.request(QUERY)
    prefetcher.request(other)
    gate.set()
    assert prefetcher.wait_idle(timeout=30)
    assert calls == [[QUERY], [other]]
    prefetcher.request(QUERY)  # tried just now (the server had no answer, say)
    assert prefetcher.wait_idle(timeout=30) and len(calls) == 2
    clock.now += 61.0
    prefetcher.request(QUERY)
    assert prefetcher.wait_idle(timeout=30)
    assert calls[-1] == [QUERY]


def test_prefetcher_in_a_forked_child_fetches_although_the_parent_is_mid_fetch() -> None:
    """A fork during a fetch: the child does not wait for the parent's thread, it fetches."""
    from mosaic_telemetry._log import RateLimitedLogger
    from mosaic_telemetry._prefetch import PredictionPrefetcher

    parent = os.getpid()
    gate, started = threading.Event(), threading.Event()
    calls: list[int] = []

    def refresh(queries: Any) -> None:
        calls.append(os.getpid())
        if os.getpid() == parent:
            started.set()
            gate.wait(timeout=30)

    prefetcher = PredictionPrefetcher(refresh, monotonic=FakeMonotonic(), log=RateLimitedLogger())
    prefetcher.request(QUERY)
    assert started.wait(timeout=30)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        ok = False
        try:
            prefetcher.request(QUERY)
            ok = prefetcher.wait_idle(timeout=30) and os.getpid() in calls
        finally:
            os._exit(0 if ok else 1)
    gate.set()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert prefetcher.wait_idle(timeout=30)
