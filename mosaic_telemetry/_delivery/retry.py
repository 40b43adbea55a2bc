"""The retry policy of the sender: one composed tenacity expression.

Pure: no HTTP here (Retry-After is parsed by ``_wire.replies``). The policy retries on
*results* (a ``SendResult`` that says "try again"), never on exceptions, so the reply's
classification is the only place that decides what is transient. Time is injected: the policy
takes ``sleep``, and by default it sleeps on the worker's stop event, so ``stop()`` cuts a
backoff short instead of waiting it out.

Only the worker imports this module (tenacity is not loaded by ``import mosaic_telemetry``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity
from tenacity.nap import sleep_using_event

from . import compat

__all__ = ["RetryPolicy", "make_retrying"]

T = TypeVar("T")


class _WaitAtLeastRetryAfter(tenacity.wait.wait_base):
    """``max(retry_after_of(last result) or 0, backoff)``: Retry-After is a floor, not a cap."""

    def __init__(
        self, backoff: tenacity.wait.wait_base, retry_after_of: Callable[[Any], float | None]
    ) -> None:
        self.backoff = backoff
        self.retry_after_of = retry_after_of

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        backoff = self.backoff(retry_state)
        outcome = retry_state.outcome
        if outcome is None or outcome.failed:
            return backoff
        return max(self.retry_after_of(outcome.result()) or 0.0, backoff)


class _StopWhen(tenacity.stop.stop_base):
    """Stop when ``predicate()`` is true (the worker's lease or shutdown deadline)."""

    def __init__(self, predicate: Callable[[], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.predicate()


def _last_result(retry_state: tenacity.RetryCallState) -> Any:
    """retry_error_callback: out of retries or stopped, hand back the last result, no RetryError."""
    assert retry_state.outcome is not None
    return retry_state.outcome.result()


class RetryPolicy:
    """Runs an attempt function under one tenacity ``Retrying``; returns its last result.

    Built once by ``make_retrying``; thread-safe (tenacity keeps per-call state in
    thread-locals). Call it with a zero-argument function returning a result object.
    """

    def __init__(self, retrying: tenacity.Retrying, stopped: Callable[[], bool]) -> None:
        self.retrying = retrying
        self._stopped = stopped

    def __call__(self, attempt: Callable[[], T]) -> T:
        last: list[T] = []

        def guarded() -> T:
            # tenacity checks ``stop`` only after an attempt, so a stop event set (or a deadline
            # passed) during a backoff would still trigger one more request. Skip it: hand the
            # previous result back, which ``stop`` then ends on.
            if last and self._stopped():
                return last[0]
            result = attempt()
            last[:] = [result]
            return result

        result: T = self.retrying(guarded)
        return result

    def __repr__(self) -> str:
        return f"RetryPolicy(stop={self.retrying.stop!r}, wait={self.retrying.wait!r})"


def make_retrying(
    *,
    max_retries: int,
    stop_event: threading.Event,
    is_retryable: Callable[[Any], bool],
    retry_after_of: Callable[[Any], float | None],
    deadline: Callable[[], bool] | None = None,
    base: float = 0.5,
    cap: float = 60.0,
    sleep: Callable[[float], None] | None = None,
    before_sleep: Callable[[Any, float], None] | None = None,
) -> RetryPolicy:
    """Build the sender's retry policy.

    Retries while ``is_retryable(result)``, at most ``max_retries`` times, waiting full-jitter
    exponential backoff (``base`` doubling up to ``cap``) but never less than
    ``retry_after_of(result)``. Stops at once when ``stop_event`` is set or ``deadline()`` is
    true. Never raises RetryError: the last result is returned. An exception raised by the
    attempt function is not retried; it propagates. ``before_sleep(result, seconds)`` runs
    before each wait.
    """
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")

    def stopped() -> bool:
        return stop_event.is_set() or (deadline is not None and deadline())

    stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(max_retries + 1) | (
        tenacity.stop_when_event_set(stop_event)
    )
    if deadline is not None:
        stop = stop | _StopWhen(deadline)

    hook: Callable[[tenacity.RetryCallState], None] | None = None
    if before_sleep is not None:
        notify = before_sleep

        def hook(retry_state: tenacity.RetryCallState) -> None:
            assert retry_state.outcome is not None
            notify(retry_state.outcome.result(), compat.upcoming_sleep(retry_state))

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(is_retryable),
        stop=stop,
        wait=_WaitAtLeastRetryAfter(
            tenacity.wait_random_exponential(multiplier=base, max=cap), retry_after_of
        ),
        sleep=sleep if sleep is not None else sleep_using_event(stop_event),
        before_sleep=hook,
        retry_error_callback=_last_result,
    )
    return RetryPolicy(retrying, stopped)
