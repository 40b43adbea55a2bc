"""Predictions over real sockets: refresh, TTL cache, restart from disk, splitting, failures."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable

import pytest

from mosaic_telemetry import (
    Complexity,
    Confidence,
    PredictionQuery,
    Provider,
    TaskType,
    TelemetryClient,
    TelemetryConfig,
)
from mosaic_telemetry.testing import FakeTelemetryServer, RecordedRequest, ScriptedReply

from .helpers import ANSWER, API_KEY

Config = Callable[..., TelemetryConfig]

QUERY = PredictionQuery(
    task_type=TaskType.IMPLEMENTATION,
    model="claude-sonnet-4-5-20250929",
    provider=Provider.ANTHROPIC,
    complexity=Complexity.MEDIUM,
)


class Clock:
    """A settable wall clock for TTL tests (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def query_n(n: int) -> PredictionQuery:
    """A distinct query per n."""
    return PredictionQuery(
        task_type="testing", model=f"model-{n}", provider="openai", complexity="low"
    )


@pytest.fixture
def seeded(server: FakeTelemetryServer) -> FakeTelemetryServer:
    """The server answers QUERY with ANSWER."""
    server.set_prediction(QUERY, ANSWER)
    return server


def test_refresh_sync_then_get_gives_the_upstream_accesses(
    seeded: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """After refresh_predictions_sync, get_prediction supports the upstream README's accesses."""
    client = TelemetryClient(make_config())
    clients.append(client)
    assert client.get_prediction(QUERY) is None
    client.refresh_predictions_sync([QUERY])
    response = client.get_prediction(QUERY)
    assert response is not None and response.prediction is not None
    assert response.prediction.input_tokens.median == 110000
    assert response.prediction.cost_usd_micros["median"] == 910000
    assert response.prediction.quality.gate_pass_rate == 0.91
    assert response.metadata.confidence is Confidence.HIGH
    assert seeded.prediction_queries == [
        {
            "task_type": "implementation",
            "model": "claude-sonnet-4-5-20250929",
            "provider": "anthropic",
            "complexity": "medium",
        }
    ]
    assert "Authorization" not in seeded.requests[0].headers


def test_refresh_async_does_not_block_the_loop(
    make_config: Config, clients: list[TelemetryClient]
) -> None:
    """await refresh_predictions leaves the event loop free while the request waits at the
    server: a coroutine of the same loop is what releases the server's reply."""
    arrived, release = threading.Event(), threading.Event()
    released_by_the_loop: list[bool] = []

    def hold(record: RecordedRequest) -> None:  # runs in the server's handler, before replying
        arrived.set()
        released_by_the_loop.append(release.wait(30))  # 30 s: only a guard against a hang

    with FakeTelemetryServer(api_key=API_KEY, on_request=hold) as held:
        held.set_prediction(QUERY, ANSWER)
        client = TelemetryClient(make_config(server_url=held.url))
        clients.append(client)

        async def main() -> None:
            refresh = asyncio.create_task(client.refresh_predictions([QUERY]))
            assert await asyncio.to_thread(arrived.wait, 30)
            release.set()  # a blocked loop would only get here after the guard ran out
            await refresh

        threads_before = threading.active_count()
        asyncio.run(main())
        assert released_by_the_loop == [True], "the event loop was blocked during the refresh"
        assert client.get_prediction(QUERY) is not None
        assert threading.active_count() <= threads_before + 1  # the executor's thread at most


def test_ttl_expiry_with_an_injected_clock(
    seeded: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """An answer is served until the TTL passes, then get_prediction returns None."""
    clock = Clock()
    client = TelemetryClient(make_config(prediction_cache_ttl_seconds=60), clock=clock)
    clients.append(client)
    client.refresh_predictions_sync([QUERY])
    clock.now += 60
    assert client.get_prediction(QUERY) is not None
    clock.now += 1
    assert client.get_prediction(QUERY) is None


def test_restart_reads_the_cache_from_disk(
    seeded: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """A new client on the same outbox has the answer at once, with no request, TTL honoured."""
    clock = Clock()
    first = TelemetryClient(make_config(), clock=clock)
    first.refresh_predictions_sync([QUERY])
    first.stop()
    requests_before = len(seeded.requests)
    second = TelemetryClient(make_config(), clock=clock)
    clients.append(second)
    response = second.get_prediction(QUERY)
    assert response is not None and response.prediction is not None
    assert response.prediction.input_tokens.median == 110000
    assert len(seeded.requests) == requests_before
    clock.now += 21601
    third = TelemetryClient(make_config(), clock=clock)
    clients.append(third)
    assert third.get_prediction(QUERY) is None


def test_sixty_queries_are_split_into_two_requests(
    server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """60 distinct queries (plus repeats) go as 50 + 10, each distinct query once."""
    client = TelemetryClient(make_config())
    clients.append(client)
    queries = [query_n(n) for n in range(60)]
    client.refresh_predictions_sync(queries + queries[:5])
    sizes = [len(r.json["queries"]) for r in server.requests]
    assert sizes == [50, 10]
    assert all(client.get_prediction(q) is not None for q in queries)


def test_server_error_keeps_the_previous_cache(
    seeded: FakeTelemetryServer,
    make_config: Config,
    clients: list[TelemetryClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 500 during refresh is logged and the earlier answer stays; nothing raises."""
    client = TelemetryClient(make_config())
    clients.append(client)
    client.refresh_predictions_sync([QUERY])
    seeded.script_predictions(ScriptedReply(status=500))
    client.refresh_predictions_sync([QUERY])
    response = client.get_prediction(QUERY)
    assert response is not None and response.metadata.sample_size == 1200
    assert "prediction refresh failed" in caplog.text


def test_network_failure_is_logged_not_raised(
    make_config: Config, clients: list[TelemetryClient]
) -> None:
    """With nothing listening, refresh returns quietly and the cache stays empty."""
    dead = FakeTelemetryServer().start()
    url = dead.url
    dead.stop()
    client = TelemetryClient(make_config(server_url=url))
    clients.append(client)
    client.refresh_predictions_sync([QUERY])
    assert client.get_prediction(QUERY) is None


def test_extra_keys_and_unknown_confidence_are_tolerated(
    server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """A reply with unknown keys and an unknown confidence string is read."""
    answer = copy.deepcopy(ANSWER)
    answer["metadata"]["confidence"] = "astronomical"
    answer["metadata"]["new_field"] = {"x": 1}
    answer["prediction"]["energy_wh"] = {"median": 3}
    answer["served_by"] = "edge-7"
    server.script_predictions(ScriptedReply(status=200, body={"results": [answer], "took_ms": 3}))
    client = TelemetryClient(make_config())
    clients.append(client)
    client.refresh_predictions_sync([QUERY])
    response = client.get_prediction(QUERY)
    assert response is not None
    assert response.metadata.confidence == "astronomical"


def test_wrong_type_skips_only_that_result(
    server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """A result with a wrong type in a known field is skipped; the others are cached."""
    bad = copy.deepcopy(ANSWER)
    bad["metadata"]["sample_size"] = "lots"
    other = query_n(1)
    server.script_predictions(ScriptedReply(status=200, body={"results": [bad, ANSWER]}))
    client = TelemetryClient(make_config())
    clients.append(client)
    client.refresh_predictions_sync([QUERY, other])
    assert client.get_prediction(QUERY) is None
    assert client.get_prediction(other) is not None


def test_unknown_combination_gives_null_prediction(
    server: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """An unseeded query is answered `prediction: null`, cached as a response without data."""
    client = TelemetryClient(make_config())
    clients.append(client)
    client.refresh_predictions_sync([QUERY])
    response = client.get_prediction(QUERY)
    assert response is not None
    assert response.prediction is None
    assert response.metadata.confidence is Confidence.NONE


def test_get_prediction_never_touches_the_network(
    seeded: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """get_prediction only reads the cache, from any number of threads."""
    client = TelemetryClient(make_config())
    clients.append(client)
    client.refresh_predictions_sync([QUERY])
    requests = len(seeded.requests)
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(client.get_prediction(QUERY)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r is not None for r in results) and len(results) == 8
    assert len(seeded.requests) == requests


def test_dry_run_and_disabled_make_no_prediction_requests(
    seeded: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """dry_run and disabled clients never send a prediction request."""
    for config in (make_config(dry_run=True), make_config(enabled=False)):
        client = TelemetryClient(config)
        clients.append(client)
        client.refresh_predictions_sync([QUERY])
        assert client.get_prediction(QUERY) is None
    assert seeded.requests == []


def test_refresh_returns_how_many_fresh_answers_it_cached(
    seeded: FakeTelemetryServer, make_config: Config, clients: list[TelemetryClient]
) -> None:
    """refresh_predictions(_sync) return the answers cached now: 0 on failure, dry run, disabled."""
    client = TelemetryClient(make_config())
    clients.append(client)
    assert client.refresh_predictions_sync([QUERY, query_n(1), QUERY]) == 2
    seeded.script_predictions(ScriptedReply(status=500))
    assert client.refresh_predictions_sync([QUERY]) == 0
    assert client.get_prediction(QUERY) is not None  # the earlier answer is kept
    assert asyncio.run(client.refresh_predictions([QUERY])) == 1
    for config in (make_config(dry_run=True), make_config(enabled=False)):
        quiet = TelemetryClient(config)
        clients.append(quiet)
        assert quiet.refresh_predictions_sync([QUERY]) == 0


def test_query_accepts_wire_strings_and_is_hashable() -> None:
    """PredictionQuery turns strings into enums and works as a dict key."""
    query = PredictionQuery(
        task_type="implementation",
        model="claude-sonnet-4-5-20250929",
        provider="anthropic",
        complexity="medium",
    )
    assert query == QUERY
    assert {query: 1}[QUERY] == 1
    with pytest.raises(ValueError, match="TaskType"):
        PredictionQuery(task_type="cooking", model="m", provider="openai", complexity="low")
