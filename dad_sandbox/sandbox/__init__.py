"""The sandbox: policies, the container engine, the supervisor and ``IsolatedExecution``."""

from dad_sandbox.sandbox._isolated import ExecutionState, IsolatedExecution
from dad_sandbox.sandbox._policy import Policy, available_policies, load_policy
from dad_sandbox.sandbox._result import RunResult

__all__ = ["ExecutionState", "IsolatedExecution", "Policy", "RunResult", "available_policies", "load_policy"]
