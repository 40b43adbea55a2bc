"""Enumerations of the Telemetry API v1 (wire-v1 §4).

Members are UPPER_CASE and ``str`` subclasses whose values are the lowercase wire strings,
so ``TaskType.TESTING == "testing"`` and ``json.dumps`` writes the wire form.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "Complexity",
    "Confidence",
    "Harness",
    "Outcome",
    "Provider",
    "QualityGate",
    "RepoSizeCategory",
    "TaskType",
]


class _WireEnum(str, Enum):
    """A str enum whose ``str()`` is its wire value."""

    def __str__(self) -> str:
        return str(self.value)


class TaskType(_WireEnum):
    """What kind of work the agent did."""

    PLANNING = "planning"
    IMPLEMENTATION = "implementation"
    CODE_REVIEW = "code_review"
    TESTING = "testing"
    DEBUGGING = "debugging"
    REFACTORING = "refactoring"
    DOCUMENTATION = "documentation"
    CONFIGURATION = "configuration"
    SECURITY_AUDIT = "security_audit"
    UNKNOWN = "unknown"


class Complexity(_WireEnum):
    """How hard the task was judged to be."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Harness(_WireEnum):
    """The agent harness that ran the task."""

    CLAUDE_CODE = "claude_code"
    OPENCODE = "opencode"
    KILO_CODE = "kilo_code"
    AIDER = "aider"
    API_DIRECT = "api_direct"
    OLLAMA_LOCAL = "ollama_local"
    CUSTOM = "custom"
    UNKNOWN = "unknown"


class Provider(_WireEnum):
    """Who served the model."""

    ANTHROPIC = "anthropic"
    OPENAI = "openai"
    OPENROUTER = "openrouter"
    OLLAMA = "ollama"
    GOOGLE = "google"
    MISTRAL = "mistral"
    CUSTOM = "custom"
    UNKNOWN = "unknown"


class QualityGate(_WireEnum):
    """A check run on the agent's output."""

    BUILD = "build"
    LINT = "lint"
    TEST = "test"
    COVERAGE = "coverage"
    TYPECHECK = "typecheck"
    SECURITY = "security"


class Outcome(_WireEnum):
    """How the task ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    PARTIAL = "partial"
    TIMEOUT = "timeout"


class RepoSizeCategory(_WireEnum):
    """Rough size of the repository worked on."""

    TINY = "tiny"
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"
    HUGE = "huge"


class Confidence(_WireEnum):
    """How much data backs a prediction."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
