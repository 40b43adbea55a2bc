#!/bin/sh
# docs/examples/agent_hook.sh: a coding agent's end-of-task hook. It turns the agent's own JSON
# summary into one `mosaic-telemetry track` call: the event is on disk when the hook returns,
# and a sender (`mosaic-telemetry send --follow`) or any running client delivers it later.
#
# The summary here is Claude Code's (`claude -p "..." --output-format json > result.json`);
# for another agent, change the mapping in $map. Usage:
#
#     agent_hook.sh result.json        # or: claude -p "..." --output-format json | agent_hook.sh
#
# Settings: MOSAIC_TELEMETRY_* as for any client, plus what the summary does not say:
# TASK_TYPE, TASK_COMPLEXITY, TASK_MODEL (when the summary names none) and TASK_GATE_COMMAND,
# a command whose exit status is the quality gate (say `pytest -q`; unset: no gate ran).
set -eu

summary=${1:-/dev/stdin}
passed=true run= failed=
if [ -n "${TASK_GATE_COMMAND:-}" ]; then
    run=test
    sh -c "$TASK_GATE_COMMAND" >&2 || { passed=false; failed=test; }
fi
export TASK_GATES_PASSED="$passed" TASK_GATES_RUN="$run" TASK_GATES_FAILED="$failed"

# The mapping, in Python: it is installed wherever the SDK is, and jq may not be. It prints one
# JSON line keyed like the event (docs/agents.md lists the keys); track reads JSON lines.
map='
import json, os, sys

summary = json.load(sys.stdin)
usage = summary.get("usage") or {}
models = list(summary.get("modelUsage") or {})
if summary.get("is_error"):
    outcome = "partial" if summary.get("subtype") == "error_max_turns" else "failure"
else:
    outcome = "success"
print(json.dumps({
    "task_type": os.environ.get("TASK_TYPE", "implementation"),
    "complexity": os.environ.get("TASK_COMPLEXITY", "medium"),
    "model": models[0] if models else os.environ.get("TASK_MODEL", "unknown"),
    "provider": "anthropic",
    "harness": "claude_code",
    "outcome": outcome,
    "task_duration_ms": int(summary.get("duration_ms", 0)),
    "actual_input_tokens": sum(int(usage.get(key, 0)) for key in (
        "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")),
    "actual_output_tokens": int(usage.get("output_tokens", 0)),
    "actual_cost_usd_micros": round(float(summary.get("total_cost_usd", 0)) * 1_000_000),
    "quality_gate_passed": os.environ["TASK_GATES_PASSED"] == "true",
    "quality_gates_run": [g for g in os.environ["TASK_GATES_RUN"].split(",") if g],
    "quality_gates_failed": [g for g in os.environ["TASK_GATES_FAILED"].split(",") if g],
}))
'
python3 -c "$map" < "$summary" | mosaic-telemetry track
