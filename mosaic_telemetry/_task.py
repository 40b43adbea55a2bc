"""``client.task(...)`` and ``@client.tracked(...)``: one agent task, timed and tracked on exit.

A ``TaskRecorder`` is a context manager (``with`` and ``async with``). On entry it reads the
cached prediction (memory only, never the network) and, when none is cached, asks the
prefetcher to fetch it for the next task of the same kind. On exit it measures the duration
with the client's monotonic clock, picks the outcome, fills the estimates the caller left
unset from the prediction's medians (0, "no estimate", when there is none), builds the event
with ``EventBuilder`` and hands it to ``client.track()``. The caller's exception propagates
untouched; a problem of telemetry's own is logged (rate-limited) and counted as ``invalid``
in ``stats()``, never raised. Each block has its own recorder, and ``TaskRecorder.current()``
reads a ``contextvars`` variable, so nested blocks, threads and asyncio tasks never share
fields.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar, cast

import attrs

from ._builder import EventBuilder
from ._enums import Outcome, QualityGate
from ._exceptions import EventValidationError
from ._log import RateLimitedLogger
from ._models import PredictionQuery, PredictionResponse, TaskCompletionEvent
from ._prefetch import PredictionPrefetcher
from ._task_rules import (
    CONTEXT_DEFAULTS,
    ESTIMATE_FIELDS,
    TaskSpec,
    duration_ms,
    medians,
    outcome_for,
)

__all__ = ["TaskHost", "TaskRecorder", "TaskSupport", "tracked"]

P = ParamSpec("P")
R = TypeVar("R")

#: The innermost task block running in this context (thread or asyncio task).
_CURRENT: contextvars.ContextVar[TaskRecorder | None] = contextvars.ContextVar(
    "mosaic_telemetry_task", default=None
)
#: Event field -> (EventBuilder setter, its keyword) of the values a task may leave unset.
_UNSET_FIELDS: dict[str, tuple[str, str]] = {
    "estimated_input_tokens": ("tokens", "estimated_in"),
    "estimated_output_tokens": ("tokens", "estimated_out"),
    "estimated_cost_usd_micros": ("cost", "estimated"),
    "context_compactions": ("context", "compactions"),
    "context_rotations": ("context", "rotations"),
    "context_utilization_final": ("context", "utilization"),
    "quality_gates_run": ("quality", "gates_run"),
}


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


class TaskHost(Protocol):
    """The client methods a task uses (looked up at call time, so tests can replace them)."""

    def track(self, event: TaskCompletionEvent) -> None: ...

    def get_prediction(self, query: PredictionQuery) -> PredictionResponse | None: ...


@attrs.define(kw_only=True)
class TaskSupport:
    """What every task of one client shares: the client, its counters, log, clock, prefetcher."""

    host: TaskHost
    instance_id: Any
    enabled: bool
    count: Callable[[str], None]
    log: RateLimitedLogger
    monotonic: Callable[[], float]
    prefetcher: PredictionPrefetcher | None = None

    def untracked(self, key: str, msg: str, *args: object) -> None:
        """Count one task that could not be tracked and log it (rate-limited, with the count)."""
        self.count("invalid")
        self.error(key, msg, *args)

    def error(self, key: str, msg: str, *args: object) -> None:
        """Rate-limited error line; a failing log call (a raising filter) is not our caller's."""
        with contextlib.suppress(Exception):  # nowhere left to report it; the count stands
            self.log.error(key, msg, *args)

    def cached(self, query: PredictionQuery | None) -> PredictionResponse | None:
        """The client's cached prediction for ``query``; a failing cache read gives None."""
        if query is None or not self.enabled:
            return None
        try:
            return self.host.get_prediction(query)
        except Exception as exc:
            self.error("task-prediction", "telemetry task cannot read its prediction: %r", exc)
            return None


class TaskRecorder:
    """One task, tracked when its ``with`` / ``async with`` block ends (see docs/agents.md).

    Made by ``client.task(...)`` and ``client.tracked(...)``, not constructed directly.

    Setters never raise and return the recorder. A task must set ``tokens(actual_in=,
    actual_out=)``, ``cost(actual=)`` and ``quality(passed=)`` before it ends; everything
    else has a default or is measured.
    """

    def __init__(self, support: TaskSupport, spec: TaskSpec) -> None:
        self._support = support
        self._spec = spec
        self._lock = threading.Lock()
        self._event_id = uuid.uuid4()
        self._builder = (
            EventBuilder(support.instance_id)
            .event_id(self._event_id)
            .task_type(spec.task_type)
            .model(spec.model)
            .provider(spec.provider)
            .harness_type(spec.harness)
            .complexity_level(spec.complexity)
            .language(spec.language)
            .repo_size(spec.repo_size)
        )
        self._given: set[str] = set()  # "setter.keyword" of every value the caller set
        self._owners: list[bool] = []  # one per entry; only the first entry records
        self._entered = self._ended = False
        self._started = 0.0
        self._token: contextvars.Token[TaskRecorder | None] | None = None
        self._query: PredictionQuery | None = None
        self._prediction: PredictionResponse | None = None
        self._event: TaskCompletionEvent | None = None

    def __repr__(self) -> str:
        state = "ended" if self._ended else "running" if self._entered else "not started"
        return f"<TaskRecorder {self._spec.task_type!s} {self._spec.model!r} {state}>"

    @staticmethod
    def current() -> TaskRecorder | None:
        """The innermost task block running in this thread or asyncio task, or None."""
        return _CURRENT.get()

    @property
    def prediction(self) -> PredictionResponse | None:
        """The cached prediction read when the block began (None: none was cached)."""
        return self._prediction

    @property
    def event_id(self) -> uuid.UUID:
        """The ``event_id`` the task's event carries."""
        return self._event_id

    @property
    def event(self) -> TaskCompletionEvent | None:
        """The event handed to ``track()`` when the block ended (None before, or if invalid)."""
        return self._event

    # --- setters: each records what it is given into the recorder's own EventBuilder ---------
    def _put(self, setter: str, **given: Any) -> TaskRecorder:
        given = {name: value for name, value in given.items() if value is not _UNSET}
        with self._lock:
            if not self._ended:
                getattr(self._builder, setter)(**given)
                self._given.update(f"{setter}.{name}" for name in given)
                return self
        self._support.log.warning(
            "task-ended", "telemetry task already ended; values set after its block are ignored"
        )
        return self

    def tokens(
        self,
        *,
        estimated_in: int = _UNSET,
        estimated_out: int = _UNSET,
        actual_in: int = _UNSET,
        actual_out: int = _UNSET,
    ) -> TaskRecorder:
        """Set token counts; an estimate left unset comes from the prediction's median."""
        return self._put(
            "tokens",
            estimated_in=estimated_in,
            estimated_out=estimated_out,
            actual_in=actual_in,
            actual_out=actual_out,
        )

    def cost(self, *, estimated: int = _UNSET, actual: int = _UNSET) -> TaskRecorder:
        """Set cost in micro-dollars; ``estimated`` left unset comes from the prediction."""
        return self._put("cost", estimated=estimated, actual=actual)

    def quality(
        self,
        *,
        passed: bool = _UNSET,
        gates_run: Iterable[QualityGate | str] = _UNSET,
        gates_failed: Iterable[QualityGate | str] = _UNSET,
    ) -> TaskRecorder:
        """Set whether the gates passed, which ran and which failed (both default: none)."""
        return self._put("quality", passed=passed, gates_run=gates_run, gates_failed=gates_failed)

    def context(
        self, *, compactions: int = _UNSET, rotations: int = _UNSET, utilization: float = _UNSET
    ) -> TaskRecorder:
        """Set context compactions, rotations and final utilization (default 0, 0, 0.0)."""
        return self._put(
            "context", compactions=compactions, rotations=rotations, utilization=utilization
        )

    def outcome(self, value: Outcome | str) -> TaskRecorder:
        """Set the outcome; it wins over the one the end of the block would pick."""
        return self._put("outcome_value", value=value)

    def retry_count(self, value: int) -> TaskRecorder:
        """Set ``retry_count`` (default 0)."""
        return self._put("retry_count", value=value)

    # --- the block ----------------------------------------------------------------------------
    def __enter__(self) -> TaskRecorder:
        """Start the clock and read the cached prediction; never raises, never waits."""
        try:
            self._begin()
        except Exception as exc:  # the end of the block still records what it can
            self._support.error("task-begin", "telemetry task start failed: %r", exc)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Track the task; the block's own exception, if any, propagates unchanged."""
        self._finish(exc)

    async def __aenter__(self) -> TaskRecorder:
        """As ``__enter__`` (no I/O: it never blocks the event loop)."""
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """As ``__exit__``: ``track()`` is one local SQLite insert, safe in a coroutine."""
        self._finish(exc)

    def _begin(self) -> None:
        with self._lock:
            owner = not self._entered
            self._entered = True
            self._owners.append(owner)
        if not owner:
            self._support.untracked(
                "task-reused", "telemetry task block entered again; only the first is recorded"
            )
            return
        self._started = self._support.monotonic()
        self._token = _CURRENT.set(self)
        self._query = self._spec.query()
        self._prediction = self._support.cached(self._query)
        prefetcher = self._support.prefetcher
        if self._prediction is None and self._query is not None and prefetcher is not None:
            prefetcher.request(self._query)

    def _finish(self, exc: BaseException | None) -> None:
        try:
            with self._lock:
                if not self._owners or not self._owners.pop():
                    return
                self._ended = True  # from here on, setters change nothing
            ended = self._support.monotonic()
            self._leave_context()
            if not self._support.enabled:
                return
            event = self._build(ended, exc)
            self._support.host.track(event)
            self._event = event
        except EventValidationError as error:
            self._support.untracked(
                "task-invalid",
                "telemetry task %s not tracked: %s (docs/agents.md: what a task must set)",
                self._spec.task_type,
                "; ".join(error.problems),
            )
        except Exception as error:
            self._support.untracked("task-failed", "telemetry task not tracked: %r", error)

    def _leave_context(self) -> None:
        token, self._token = self._token, None
        if token is None:
            return
        try:
            _CURRENT.reset(token)
        except ValueError:  # left in another context than it was entered in
            if _CURRENT.get() is self:
                _CURRENT.set(None)

    def _build(self, ended: float, exc: BaseException | None) -> TaskCompletionEvent:
        builder, given = self._builder, self._given
        builder.duration_ms(duration_ms(self._started, ended))
        if "outcome_value.value" not in given:
            builder.outcome_value(outcome_for(exc))
        prediction = self._prediction or self._support.cached(self._query)  # or: fetched since
        defaults = {
            **dict.fromkeys(ESTIMATE_FIELDS, 0),
            **medians(prediction),
            **CONTEXT_DEFAULTS,
            "quality_gates_run": (),
        }
        for field, (setter, keyword) in _UNSET_FIELDS.items():
            if f"{setter}.{keyword}" not in given:
                getattr(builder, setter)(**{keyword: defaults[field]})
        return builder.build()


def tracked(support: TaskSupport, spec: TaskSpec) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator: each call of the function (sync or async) runs in a fresh task block."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(
                f"tracked() takes a function or a coroutine function, not the generator "
                f"{getattr(func, '__qualname__', func)!r}: use `with client.task(...)` inside it"
            )
        if inspect.iscoroutinefunction(func):
            coroutine = cast(Callable[P, Awaitable[Any]], func)

            @functools.wraps(func)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with TaskRecorder(support, spec):
                    return await coroutine(*args, **kwargs)

            return cast(Callable[P, R], run_async)

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with TaskRecorder(support, spec):
                return func(*args, **kwargs)

        return run

    return decorate
