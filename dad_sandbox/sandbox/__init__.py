"""The sandbox: policies, the container engine, the supervisor and ``IsolatedExecution``.

Names are imported on first use, so importing one private module of this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dad_sandbox._lazy import lazy_getattr

_EXPORTS = {
    "ExecutionState": "dad_sandbox.sandbox._isolated",
    "IsolatedExecution": "dad_sandbox.sandbox._isolated",
    "Orphan": "dad_sandbox.sandbox._supervisor",
    "OrphanAction": "dad_sandbox.sandbox._supervisor",
    "ExecEvent": "dad_sandbox.sandbox._session",
    "ExecResult": "dad_sandbox.sandbox._session",
    "Policy": "dad_sandbox.sandbox._policy",
    "RunHandle": "dad_sandbox.sandbox._supervisor",
    "RunResult": "dad_sandbox.sandbox._result",
    "Session": "dad_sandbox.sandbox._session",
    "SessionLimits": "dad_sandbox.sandbox._session",
    "Supervisor": "dad_sandbox.sandbox._supervisor",
    "available_policies": "dad_sandbox.sandbox._policy",
    "load_policy": "dad_sandbox.sandbox._policy",
}

__all__ = [
    "ExecEvent",
    "ExecResult",
    "ExecutionState",
    "IsolatedExecution",
    "Orphan",
    "OrphanAction",
    "Policy",
    "RunHandle",
    "RunResult",
    "Session",
    "SessionLimits",
    "Supervisor",
    "available_policies",
    "load_policy",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)


if TYPE_CHECKING:
    from dad_sandbox.sandbox._isolated import ExecutionState, IsolatedExecution
    from dad_sandbox.sandbox._policy import Policy, available_policies, load_policy
    from dad_sandbox.sandbox._result import RunResult
    from dad_sandbox.sandbox._session import ExecEvent, ExecResult, Session, SessionLimits
    from dad_sandbox.sandbox._supervisor import Orphan, OrphanAction, RunHandle, Supervisor
