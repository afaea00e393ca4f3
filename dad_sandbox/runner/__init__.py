"""Runners: execute components (in the container, or in-process for trusted code)."""

from dad_sandbox.runner._metrics import MetricsEmitter
from dad_sandbox.runner._reference import check_reference, import_component, provisional_root_id, reference_of
from dad_sandbox.runner._runner import (
    AgentRunner,
    ComponentResult,
    ComponentRunner,
    FlowRunner,
    NodeResult,
    path_matches,
    runner_for,
)
from dad_sandbox.runner._trace import Span, TraceWriter

__all__ = [
    "AgentRunner",
    "ComponentResult",
    "ComponentRunner",
    "FlowRunner",
    "MetricsEmitter",
    "NodeResult",
    "Span",
    "TraceWriter",
    "check_reference",
    "import_component",
    "path_matches",
    "provisional_root_id",
    "reference_of",
    "runner_for",
]
