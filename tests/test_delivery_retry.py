"""Tests of the retry policy and Retry-After parsing (pure: no HTTP, no real backoff sleeps)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from mosaic_telemetry._delivery.retry import RetryPolicy, make_retrying


# --- make_retrying ----------------------------------------------------------------------------
class Script:
    """An attempt function that returns scripted results and counts its calls."""

    def __init__(self, *results: Any, after: Callable[[], None] | None = None) -> None:
        self.results = list(results)
        self.calls = 0
        self.after = after

    def __call__(self) -> Any:
        self.calls += 1
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if self.after is not None:
            self.after()
        return result


RETRY = "retry"


def policy(
    *,
    max_retries: int = 3,
    stop_event: threading.Event | None = None,
    waits: list[float] | None = None,
    retry_after: float | None = None,
    **kwargs: Any,
) -> RetryPolicy:
    """A policy retrying the string "retry", recording requested waits instead of sleeping."""
    recorded = waits if waits is not None else []
    kwargs.setdefault("sleep", recorded.append)
    return make_retrying(
        max_retries=max_retries,
        stop_event=stop_event or threading.Event(),
        is_retryable=lambda result: result == RETRY,
        retry_after_of=lambda result: retry_after,
        **kwargs,
    )


def test_success_first_time_makes_one_attempt() -> None:
    """A non-retryable result is returned at once, with no wait."""
    waits: list[float] = []
    attempt = Script("ok")
    assert policy(waits=waits)(attempt) == "ok"
    assert (attempt.calls, waits) == (1, [])


def test_retries_until_success() -> None:
    """Retryable results are retried and the first good result is returned."""
    waits: list[float] = []
    attempt = Script(RETRY, RETRY, "ok")
    assert policy(waits=waits)(attempt) == "ok"
    assert (attempt.calls, len(waits)) == (3, 2)


@pytest.mark.parametrize("max_retries", [0, 1, 3, 7])
def test_max_retries_honoured_and_last_result_returned(max_retries: int) -> None:
    """After max_retries retries the last result comes back (no RetryError), after N+1 tries."""
    waits: list[float] = []
    attempt = Script(*([RETRY] * max_retries), "retry-last")
    result = make_retrying(
        max_retries=max_retries,
        stop_event=threading.Event(),
        is_retryable=lambda result: result.startswith("retry"),
        retry_after_of=lambda result: None,
        sleep=waits.append,
    )(attempt)
    assert ("retry-last", max_retries + 1, max_retries) == (result, attempt.calls, len(waits))


def test_backoff_grows_and_is_jittered_within_bounds() -> None:
    """Waits are full-jitter exponential: within [0, base * 2**n] and capped, not all equal."""
    base, cap = 1.0, 8.0
    rounds: list[list[float]] = []
    for _ in range(40):
        waits: list[float] = []
        policy(max_retries=6, waits=waits, base=base, cap=cap)(Script(RETRY))
        rounds.append(waits)
    for waits in rounds:
        assert len(waits) == 6
        for n, wait in enumerate(waits):
            assert 0.0 <= wait <= min(base * 2**n, cap)
    firsts, lasts = [w[0] for w in rounds], [w[-1] for w in rounds]
    assert len(set(lasts)) > 1, "no jitter"
    assert max(lasts) > max(firsts), "no growth"


def test_retry_after_is_a_minimum() -> None:
    """A Retry-After longer than the backoff is waited in full."""
    waits: list[float] = []
    policy(max_retries=2, waits=waits, retry_after=42.0, base=0.01, cap=1.0)(Script(RETRY))
    assert waits == [42.0, 42.0]


def test_backoff_wins_over_shorter_retry_after() -> None:
    """A Retry-After shorter than the backoff does not shorten the backoff."""
    waits: list[float] = []
    policy(max_retries=3, waits=waits, retry_after=0.0, base=100.0, cap=100.0)(Script(RETRY))
    assert len(waits) == 3
    assert all(0.0 <= wait <= 100.0 for wait in waits)


def test_retry_after_not_capped_by_backoff_cap() -> None:
    """Retry-After (already capped by the parser) may exceed the backoff cap."""
    waits: list[float] = []
    policy(max_retries=1, waits=waits, retry_after=300.0, cap=60.0)(Script(RETRY))
    assert waits == [300.0]


def test_before_sleep_sees_result_and_wait() -> None:
    """before_sleep gets the retryable result and the seconds about to be waited."""
    seen: list[tuple[Any, float]] = []
    waits: list[float] = []
    policy(
        max_retries=2,
        waits=waits,
        retry_after=5.0,
        before_sleep=lambda result, seconds: seen.append((result, seconds)),
    )(Script(RETRY, RETRY, "ok"))
    assert seen == [(RETRY, 5.0), (RETRY, 5.0)]
    assert waits == [5.0, 5.0]


def test_stop_event_already_set_means_one_attempt() -> None:
    """With the stop event set, the first result is returned without any retry or wait."""
    event = threading.Event()
    event.set()
    waits: list[float] = []
    attempt = Script(RETRY)
    assert policy(stop_event=event, waits=waits)(attempt) == RETRY
    assert (attempt.calls, waits) == (1, [])


def test_stop_event_set_during_attempt_stops_retrying() -> None:
    """Setting the stop event while an attempt runs ends the loop after that attempt."""
    event = threading.Event()
    attempt = Script(RETRY, after=event.set)
    assert policy(stop_event=event, max_retries=5)(attempt) == RETRY
    assert attempt.calls == 1


def test_stop_event_cuts_a_real_wait_short() -> None:
    """The default sleep waits on the stop event: setting it ends an hour-long backoff."""
    event = threading.Event()
    attempt = Script(RETRY)
    slept = threading.Event()

    def before_sleep(result: Any, seconds: float) -> None:
        slept.set()

    done: list[Any] = []
    policy_ = make_retrying(
        max_retries=5,
        stop_event=event,
        is_retryable=lambda result: result == RETRY,
        retry_after_of=lambda result: 3600.0,
        before_sleep=before_sleep,
    )
    runner = threading.Thread(target=lambda: done.append(policy_(attempt)))
    runner.start()
    assert slept.wait(30.0)  # the timeouts only guard against a hang: the backoff is an hour
    event.set()
    runner.join(30.0)
    assert not runner.is_alive()
    assert done == [RETRY]
    # no request after the interrupted wait: the stop is honoured before the next attempt
    assert attempt.calls == 1


def test_deadline_stops_retrying() -> None:
    """A deadline that turns true ends the loop and returns the last result."""
    waits: list[float] = []
    attempt = Script(RETRY)
    calls_until_deadline = 2
    result = policy(
        max_retries=10, waits=waits, deadline=lambda: attempt.calls >= calls_until_deadline
    )(attempt)
    assert (RETRY, calls_until_deadline, 1) == (result, attempt.calls, len(waits))


def test_deadline_passed_during_wait_skips_next_attempt() -> None:
    """A deadline passed while waiting prevents the next request (e.g. the lease ran out)."""
    expired = threading.Event()
    attempt = Script(RETRY)
    result = policy(max_retries=10, sleep=lambda seconds: expired.set(), deadline=expired.is_set)(
        attempt
    )
    assert (result, attempt.calls) == (RETRY, 1)


def test_exceptions_propagate_without_retry() -> None:
    """An exception from the attempt function is re-raised as is, never retried."""
    calls: list[int] = []

    def boom() -> str:
        calls.append(1)
        raise KeyError("bug")

    with pytest.raises(KeyError, match="bug"):
        policy()(boom)
    assert len(calls) == 1


def test_exception_after_retries_propagates() -> None:
    """An exception raised on a later attempt propagates too (no RetryError wrapping)."""
    results: list[Any] = [RETRY, RuntimeError("late")]

    def attempt() -> Any:
        item = results.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    with pytest.raises(RuntimeError, match="late"):
        policy()(attempt)


def test_policy_is_reusable_and_independent_between_calls() -> None:
    """One policy built once serves many calls, each with its own attempt count."""
    waits: list[float] = []
    shared = policy(max_retries=2, waits=waits)
    first, second = Script(RETRY), Script(RETRY, "ok")
    assert shared(first) == RETRY
    assert shared(second) == "ok"
    assert (first.calls, second.calls) == (3, 2)


def test_policy_is_thread_safe() -> None:
    """Concurrent calls on one policy keep their own state."""
    shared = policy(max_retries=3, sleep=lambda seconds: None)
    scripts = [Script(*([RETRY] * n), f"ok{n}") for n in range(4)]
    results: dict[int, Any] = {}

    def run(n: int) -> None:
        results[n] = shared(scripts[n])

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5.0)
    assert {n: f"ok{n}" for n in range(4)} == results
    assert [script.calls for script in scripts] == [1, 2, 3, 4]


def test_negative_max_retries_is_refused() -> None:
    """max_retries below zero is a programming error, said at construction."""
    with pytest.raises(ValueError, match="max_retries"):
        policy(max_retries=-1)
