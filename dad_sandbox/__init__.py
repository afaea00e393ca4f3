"""dad-sandbox: the Dhenara Agent DSL Run System, where every run gets its own Docker container.

Code written against the DAD docs runs with only its imports changed::

    from dad_sandbox import RunContext, RunEnvParams, IsolatedExecution, AgentRunner, FlowRunner

Names are imported on first use (PEP 562), so ``import dad_sandbox`` - and the ``dad-sandbox``
command's start-up - pays only for what is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dad_sandbox._lazy import lazy_getattr
from dad_sandbox._version import __version__

_EXPORTS = {
    "AgentDefinition": "dad_sandbox.dsl",
    "AgentRunner": "dad_sandbox.runner",
    "DadSandboxError": "dad_sandbox.errors",
    "ExecResult": "dad_sandbox.sandbox",
    "FlowDefinition": "dad_sandbox.dsl",
    "FlowRunner": "dad_sandbox.runner",
    "FunctionNode": "dad_sandbox.dsl",
    "IsolatedExecution": "dad_sandbox.sandbox",
    "NodeContext": "dad_sandbox.dsl",
    "Policy": "dad_sandbox.sandbox",
    "RunContext": "dad_sandbox.run",
    "RunEnvParams": "dad_sandbox.run",
    "RunHandle": "dad_sandbox.sandbox",
    "RunMetadata": "dad_sandbox.run",
    "RunReason": "dad_sandbox.run",
    "RunResult": "dad_sandbox.sandbox",
    "RunStatus": "dad_sandbox.run",
    "Session": "dad_sandbox.sandbox",
    "SessionLimits": "dad_sandbox.sandbox",
    "Supervisor": "dad_sandbox.sandbox",
    "load_policy": "dad_sandbox.sandbox",
}

__all__ = [
    "AgentDefinition",
    "AgentRunner",
    "DadSandboxError",
    "ExecResult",
    "FlowDefinition",
    "FlowRunner",
    "FunctionNode",
    "IsolatedExecution",
    "NodeContext",
    "Policy",
    "RunContext",
    "RunEnvParams",
    "RunHandle",
    "RunMetadata",
    "RunReason",
    "RunResult",
    "RunStatus",
    "Session",
    "SessionLimits",
    "Supervisor",
    "__version__",
    "load_policy",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)


if TYPE_CHECKING:
    from dad_sandbox.dsl import AgentDefinition, FlowDefinition, FunctionNode, NodeContext
    from dad_sandbox.errors import DadSandboxError
    from dad_sandbox.run import RunContext, RunEnvParams, RunMetadata, RunReason, RunStatus
    from dad_sandbox.runner import AgentRunner, FlowRunner
    from dad_sandbox.sandbox import (
        ExecResult,
        IsolatedExecution,
        Policy,
        RunHandle,
        RunResult,
        Session,
        SessionLimits,
        Supervisor,
        load_policy,
    )
