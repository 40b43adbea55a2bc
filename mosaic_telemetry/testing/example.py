"""One example event for tests, benchmarks and the demo: every field of the upstream README's."""

from __future__ import annotations

from .. import Complexity, EventBuilder, Harness, Outcome, Provider, QualityGate, TaskType

__all__ = ["example_event_builder"]


def example_event_builder(instance_id: str) -> EventBuilder:
    """An EventBuilder with every field of the upstream README's example event set.

    Call ``.build()`` for a valid event (a fresh ``event_id`` each time), or override any
    setter first.
    """
    return (
        EventBuilder(instance_id=instance_id)
        .task_type(TaskType.IMPLEMENTATION)
        .model("claude-sonnet-4-5-20250929")
        .provider(Provider.ANTHROPIC)
        .harness_type(Harness.CLAUDE_CODE)
        .complexity_level(Complexity.MEDIUM)
        .outcome_value(Outcome.SUCCESS)
        .duration_ms(45000)
        .tokens(estimated_in=105000, estimated_out=45000, actual_in=112340, actual_out=38760)
        .cost(estimated=630000, actual=919200)
        .quality(passed=True, gates_run=[QualityGate.BUILD, QualityGate.LINT, QualityGate.TEST])
        .context(compactions=2, rotations=0, utilization=0.72)
        .language("typescript")
    )
