"""The delivery policy: what to do with a leased batch, given the server's classified reply.

Pure: rows and a ``SendResult`` in, a :class:`Plan` out; the worker applies it to the outbox.
Nothing is dropped here: every row of the batch ends in exactly one of the plan's fields
(delivered, duplicate, dry run, dead-lettered, released for later, or sent again now).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import attrs

from .._store import MAX_ROW_DELAY_SECONDS
from .._wire.replies import SendKind, SendResult
from .ports import ClaimedRow

__all__ = [
    "MAX_INLINE_RETRY_AFTER",
    "Next",
    "Plan",
    "is_retryable",
    "plan_batch",
    "verdict_backoff",
]

#: A Retry-After up to this long is waited inside the retry loop; a longer one ends the cycle
#: and is kept in the outbox's shared "not before" time instead.
MAX_INLINE_RETRY_AFTER = 30.0


def is_retryable(result: SendResult) -> bool:
    """Whether the retry loop tries ``result``'s batch again at once (after its backoff)."""
    return result.kind is SendKind.RETRY and (
        result.retry_after is None or result.retry_after <= MAX_INLINE_RETRY_AFTER
    )


class Next(enum.Enum):
    """What the drain does after applying a plan."""

    CONTINUE = "continue"  # go on with the next batch
    RESEND = "resend"  # send ``Plan.resend`` now (the rest of a 422 batch)
    SPLIT = "split"  # send ``Plan.resend`` again in two halves (413, 400, unreadable 422)
    RETRY_LATER = "retry_later"  # transient: released; next timed cycle (or Retry-After)
    PAUSE = "pause"  # refused (401/403, other 4xx): released; pause sending, log once


DeadRow = tuple[int, str, "int | None"]


@attrs.frozen
class Plan:
    """The fate of every row of one batch, and what the drain does next."""

    next: Next
    delivered: tuple[int, ...] = ()
    duplicates: tuple[int, ...] = ()
    dry_run: tuple[int, ...] = ()
    dead: tuple[DeadRow, ...] = ()
    #: Rows given back with no verdict, to be retried with backoff (never at once).
    unanswered: tuple[int, ...] = ()
    #: Rows given back as they are (a transient failure or a refusal).
    release: tuple[int, ...] = ()
    resend: tuple[ClaimedRow, ...] = ()
    #: Ids a 2xx reply named that were not in the batch (a confused or lying server).
    unknown_ids: int = 0
    #: Seconds every process sharing the outbox must wait (a Retry-After too long to sleep).
    shared_pause: float | None = None


def verdict_backoff(
    attempts: int, *, base: float = 1.0, cap: float = MAX_ROW_DELAY_SECONDS
) -> float:
    """Seconds before an unanswered row is offered again: ``base`` doubling per attempt.

    Never more than the store's ``MAX_ROW_DELAY_SECONDS``: a row further ahead than that is
    taken for a clock step back and claimed at once.
    """
    return min(cap, base * 2.0 ** max(0, attempts - 1))


def _accepted(rows: Sequence[ClaimedRow], result: SendResult) -> Plan:
    verdicts = result.verdicts
    if verdicts is None:  # no readable results: the status says all were accepted
        return Plan(Next.CONTINUE, delivered=tuple(r.row_id for r in rows))
    delivered: list[int] = []
    duplicates: list[int] = []
    dead: list[DeadRow] = []
    unanswered: list[int] = []
    for row in rows:
        verdict = verdicts.get(row.event_id)
        if verdict is None:
            unanswered.append(row.row_id)
        elif verdict.status == "accepted":
            delivered.append(row.row_id)
        elif verdict.status == "duplicate":
            duplicates.append(row.row_id)
        else:
            reason = f"rejected by server: {verdict.error or 'no reason given'}"
            dead.append((row.row_id, reason, result.status))
    known = {row.event_id for row in rows}
    return Plan(
        Next.CONTINUE,
        delivered=tuple(delivered),
        duplicates=tuple(duplicates),
        dead=tuple(dead),
        unanswered=tuple(unanswered),
        unknown_ids=sum(1 for event_id in verdicts if event_id not in known),
    )


def plan_batch(rows: Sequence[ClaimedRow], result: SendResult) -> Plan:
    """The plan for ``rows`` (one leased batch, in send order) after ``result``."""
    ids = tuple(r.row_id for r in rows)
    kind = result.kind
    if kind is SendKind.OK:
        return _accepted(rows, result)
    if kind is SendKind.DRY_RUN:
        return Plan(Next.CONTINUE, dry_run=ids)
    if kind is SendKind.INVALID and result.invalid:
        dead = tuple(
            (rows[i].row_id, f"rejected by server (422): {reason}", result.status)
            for i, reason in sorted(result.invalid.items())
        )
        rest = tuple(row for i, row in enumerate(rows) if i not in result.invalid)
        return Plan(Next.RESEND if rest else Next.CONTINUE, dead=dead, resend=rest)
    if kind in (SendKind.TOO_LARGE, SendKind.BAD_REQUEST, SendKind.INVALID):
        if len(rows) == 1:
            reason = f"refused by server (HTTP {result.status}): {result.detail}"
            return Plan(Next.CONTINUE, dead=((rows[0].row_id, reason, result.status),))
        return Plan(Next.SPLIT, resend=tuple(rows))
    if kind is SendKind.RETRY:
        return Plan(Next.RETRY_LATER, release=ids, shared_pause=result.retry_after or None)
    return Plan(Next.PAUSE, release=ids)  # AUTH, CLIENT_ERROR: keep every event
