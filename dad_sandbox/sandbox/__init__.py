"""The sandbox: policies, the container engine, the supervisor and ``IsolatedExecution``."""

from dad_sandbox.sandbox._isolated import ExecutionState, IsolatedExecution
from dad_sandbox.sandbox._policy import Policy, available_policies, load_policy
from dad_sandbox.sandbox._result import RunResult
from dad_sandbox.sandbox._service import Orphan, OrphanAction, RunHandle, Supervisor

__all__ = [
    "ExecutionState",
    "IsolatedExecution",
    "Orphan",
    "OrphanAction",
    "Policy",
    "RunHandle",
    "RunResult",
    "Supervisor",
    "available_policies",
    "load_policy",
]
