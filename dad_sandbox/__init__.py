"""dad-sandbox: the Dhenara Agent DSL Run System, where every run gets its own Docker container.

Code written against the DAD docs runs with only its imports changed::

    from dad_sandbox import RunContext, RunEnvParams, IsolatedExecution, AgentRunner, FlowRunner
"""

from dad_sandbox._version import __version__
from dad_sandbox.dsl import AgentDefinition, FlowDefinition, FunctionNode, NodeContext
from dad_sandbox.errors import DadSandboxError
from dad_sandbox.run import RunContext, RunEnvParams, RunMetadata, RunStatus
from dad_sandbox.runner import AgentRunner, FlowRunner
from dad_sandbox.sandbox import IsolatedExecution, Policy, RunHandle, RunResult, Supervisor, load_policy

__all__ = [
    "AgentDefinition",
    "AgentRunner",
    "DadSandboxError",
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
    "RunResult",
    "RunStatus",
    "Supervisor",
    "__version__",
    "load_policy",
]
