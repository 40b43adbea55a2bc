"""The delivery policy: every row of a batch gets exactly one fate for each kind of reply."""

from __future__ import annotations

import pytest

from mosaic_telemetry._delivery.policy import Next, Plan, is_retryable, plan_batch, verdict_backoff
from mosaic_telemetry._delivery.ports import ClaimedRow
from mosaic_telemetry._wire.replies import SendKind, SendResult, Verdict

ROWS = [ClaimedRow(row_id=i, event_id=f"id-{i}", body="{}", attempts=1) for i in (1, 2, 3)]


def fates(plan: Plan) -> list[int]:
    """Every row id the plan gives a fate to, sorted (a row in two fates shows twice)."""
    ids = [*plan.delivered, *plan.duplicates, *plan.dry_run, *plan.unanswered, *plan.release]
    ids += [row_id for row_id, _reason, _status in plan.dead]
    ids += [row.row_id for row in plan.resend]
    return sorted(ids)


def test_verdicts_split_rows_into_delivered_duplicate_dead_and_unanswered() -> None:
    """A 2xx with verdicts acks, dead-letters and gives back unanswered rows, one fate each."""
    verdicts = {
        "id-1": Verdict("accepted"),
        "id-2": Verdict("rejected", "bad model"),
        "someone-else": Verdict("accepted"),
    }
    plan = plan_batch(ROWS, SendResult(SendKind.OK, 202, verdicts=verdicts))
    assert plan.next is Next.CONTINUE
    assert (plan.delivered, plan.unanswered, plan.unknown_ids) == ((1,), (3,), 1)
    assert plan.dead == ((2, "rejected by server: bad model", 202),)
    assert fates(plan) == [1, 2, 3]


def test_2xx_without_results_delivers_every_row() -> None:
    """No readable results: the status says all were accepted."""
    plan = plan_batch(ROWS, SendResult(SendKind.OK, 202, verdicts=None))
    assert plan.delivered == (1, 2, 3)


def test_dry_run_is_never_delivered() -> None:
    """A dry run removes the rows as dry run, not as delivered."""
    plan = plan_batch(ROWS, SendResult(SendKind.DRY_RUN, None))
    assert (plan.delivered, plan.dry_run) == ((), (1, 2, 3))


def test_422_with_indices_dead_letters_those_and_resends_the_rest() -> None:
    """A 422 naming index 1 dead-letters that row and resends the others now."""
    plan = plan_batch(ROWS, SendResult(SendKind.INVALID, 422, invalid={1: "model: too long"}))
    assert plan.next is Next.RESEND
    assert [row.row_id for row in plan.resend] == [1, 3]
    assert plan.dead == ((2, "rejected by server (422): model: too long", 422),)
    assert fates(plan) == [1, 2, 3]


@pytest.mark.parametrize("kind", [SendKind.TOO_LARGE, SendKind.BAD_REQUEST, SendKind.INVALID])
def test_unsendable_batches_split_and_a_single_event_dead_letters(kind: SendKind) -> None:
    """413, 400 and an unreadable 422 bisect; alone, the event is dead-lettered, never resent."""
    assert plan_batch(ROWS, SendResult(kind, 413)).next is Next.SPLIT
    single = plan_batch(ROWS[:1], SendResult(kind, 413, detail="HTTP 413"))
    assert single.next is Next.CONTINUE
    assert [row_id for row_id, _r, _s in single.dead] == [1]


def test_transient_failure_releases_and_shares_a_retry_after() -> None:
    """5xx/429 after the retries: rows go back; a Retry-After becomes the shared pause."""
    plan = plan_batch(ROWS, SendResult(SendKind.RETRY, 503, retry_after=120.0))
    assert (plan.next, plan.release, plan.shared_pause) == (Next.RETRY_LATER, (1, 2, 3), 120.0)
    assert plan_batch(ROWS, SendResult(SendKind.RETRY, None)).shared_pause is None


@pytest.mark.parametrize("kind", [SendKind.AUTH, SendKind.CLIENT_ERROR])
def test_refusals_keep_every_event_and_pause(kind: SendKind) -> None:
    """401/403 and other 4xx keep the rows and pause sending."""
    plan = plan_batch(ROWS, SendResult(kind, 401))
    assert (plan.next, plan.release) == (Next.PAUSE, (1, 2, 3))


def test_inline_retries_only_for_short_retry_after() -> None:
    """A transient reply is retried inline unless its Retry-After is too long to sleep."""
    assert is_retryable(SendResult(SendKind.RETRY, 503))
    assert is_retryable(SendResult(SendKind.RETRY, 429, retry_after=30.0))
    assert not is_retryable(SendResult(SendKind.RETRY, 429, retry_after=31.0))
    assert not is_retryable(SendResult(SendKind.AUTH, 401))


def test_unanswered_backoff_doubles_and_is_capped() -> None:
    """Rows the server did not answer wait 1, 2, 4 ... seconds, at most the cap."""
    assert [verdict_backoff(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert verdict_backoff(50) == 300.0
