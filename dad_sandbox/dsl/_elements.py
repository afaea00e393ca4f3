"""The minimal component model: function nodes in flows, flows in agents.

Components are plain definitions (no behaviour beyond validation); runners execute them. Each
definition remembers the module it was created in so a runner can name it by reference
(``module:attribute``) for the container to import.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dad_sandbox.run._layout import check_element_id


@dataclass(frozen=True, slots=True)
class NodeContext:
    """What a node function is given: its input, its folder, and the outputs of earlier nodes."""

    node_id: str
    hierarchy_path: str
    node_dir: Path
    run_id: str
    input: BaseModel | None
    results: Mapping[str, Any]
    log: Any


NodeFunction = Callable[[NodeContext], Any | Awaitable[Any]]


def _caller_module(depth: int = 2) -> str:
    frame = sys._getframe(depth)
    return frame.f_globals.get("__name__", "__main__")


@dataclass(frozen=True, slots=True)
class FunctionNode:
    """A node that calls a Python function (sync or async) with a :class:`NodeContext`.

    ``input_model`` validates the node's static input; ``output_model`` validates what it returns.
    """

    id: str
    func: NodeFunction
    input_model: type[BaseModel] | None = None
    output_model: type[BaseModel] | None = None

    def __post_init__(self) -> None:
        check_element_id(self.id, "node id")
        if not callable(self.func):
            raise TypeError(f"node {self.id!r}: func must be callable, got {type(self.func).__name__}")

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)


@dataclass(slots=True)
class FlowDefinition:
    """An ordered list of nodes. Build with ``FlowDefinition("id").node("a", fn).node("b", fn)``."""

    id: str
    nodes: list[FunctionNode] = field(default_factory=list)
    defined_in: str = field(default_factory=_caller_module)

    def __post_init__(self) -> None:
        check_element_id(self.id, "flow id")

    def node(
        self,
        node_id: str,
        func: NodeFunction,
        *,
        input_model: type[BaseModel] | None = None,
        output_model: type[BaseModel] | None = None,
    ) -> FlowDefinition:
        """Append a function node; returns the flow so calls chain."""
        if any(n.id == node_id for n in self.nodes):
            raise ValueError(f"flow {self.id!r} already has a node {node_id!r}; node ids are unique within a flow")
        self.nodes.append(FunctionNode(node_id, func, input_model, output_model))
        return self


@dataclass(slots=True)
class AgentDefinition:
    """An agent: flows run in order, each in its own folder under the agent's."""

    id: str
    flows: list[FlowDefinition] = field(default_factory=list)
    defined_in: str = field(default_factory=_caller_module)

    def __post_init__(self) -> None:
        check_element_id(self.id, "agent id")
        seen: set[str] = set()
        for flow in self.flows:
            if flow.id in seen:
                raise ValueError(f"agent {self.id!r} has two flows with id {flow.id!r}")
            seen.add(flow.id)

    def flow(self, flow: FlowDefinition) -> AgentDefinition:
        """Append a flow; returns the agent so calls chain."""
        if any(f.id == flow.id for f in self.flows):
            raise ValueError(f"agent {self.id!r} already has a flow {flow.id!r}")
        self.flows.append(flow)
        return self


Component = FlowDefinition | AgentDefinition
