"""What delivery needs to run on older releases of its dependencies.

**The wait before a retry.** ``RetryCallState.upcoming_sleep`` is tenacity 8.3+; before it,
the same number is ``next_action.sleep``, set just before the ``before_sleep`` hook runs
(:func:`upcoming_sleep`). Reproduce: ``pip install tenacity==8.2.3`` and run
``tests/test_delivery_retry.py``; the hook failed with ``AttributeError: 'RetryCallState'
object has no attribute 'upcoming_sleep'`` and every retried batch ended the worker's step.

Reading replies needs nothing here: the transport reads with ``read(amt)``, which urllib3 1.26
and 2.x share, bounded by :mod:`.deadline` at the socket (urllib3 2.0 and 2.1 have no
``read1``, which the transport once used).

Pure: no module state, nothing imported but the standard library.
"""

from __future__ import annotations

from typing import Any

__all__ = ["upcoming_sleep"]


def upcoming_sleep(retry_state: Any) -> float:
    """The seconds tenacity is about to wait, from a ``before_sleep`` hook's retry state."""
    sleep = getattr(retry_state, "upcoming_sleep", None)  # tenacity >= 8.3
    if sleep is None:
        sleep = retry_state.next_action.sleep  # tenacity < 8.3
    return float(sleep)
