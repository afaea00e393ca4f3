"""The component model: agents hold flows and subagents; flows hold nodes and control elements.

Components are plain definitions (validation only, no behaviour); runners execute them. Each
definition remembers the module it was created in, so a runner can name it by reference
(``module:attribute``) for the container to import.

Hierarchy paths join element ids with dots: ``agent.flow.node``; inside a loop
``….loop_id.iter_N.node``; inside a branch ``….cond_id.is_true.node`` (or ``is_false``).
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from dad_sandbox.errors import ElementIdError
from dad_sandbox.run._layout import check_element_id

#: Segments the runner adds to paths; element ids may not take these shapes.
_RESERVED_RE = re.compile(r"^(iter_\d+|is_true|is_false)$")


def _check_id(element_id: str, what: str) -> str:
    check_element_id(element_id, what)
    if _RESERVED_RE.match(element_id):
        raise ElementIdError(f"{what} {element_id!r} is reserved for loop iterations and branches; choose another id")
    return element_id


@dataclass(frozen=True, slots=True)
class NodeContext:
    """What a node (or a loop's items / a branch's predicate) is given.

    ``results`` maps node ids and full hierarchy paths of nodes that already ran (or were loaded
    from the previous run in a re-run) to their outputs. ``item``/``index`` are set inside a loop.
    """

    node_id: str
    hierarchy_path: str
    node_dir: Path
    run_id: str
    input: BaseModel | None
    results: Mapping[str, Any]
    log: Any
    item: Any = None
    index: int | None = None


NodeFunction = Callable[[NodeContext], Any | Awaitable[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """Base of all nodes. ``continue_on_error``: a failure is recorded but the run goes on."""

    id: str
    continue_on_error: bool = False
    input_model: type[BaseModel] | None = None
    kind: ClassVar[str] = "node"

    def __post_init__(self) -> None:
        _check_id(self.id, "node id")


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionNode(Node):
    """Calls a Python function (sync or async) with a :class:`NodeContext`; its return is the output.

    ``input_model`` validates the node's static input; ``output_model`` validates what it returns.
    """

    func: NodeFunction
    output_model: type[BaseModel] | None = None
    kind: ClassVar[str] = "function_node"

    def __post_init__(self) -> None:
        Node.__post_init__(self)
        if not callable(self.func):
            raise TypeError(f"node {self.id!r}: func must be callable, got {type(self.func).__name__}")

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandNode(Node):
    """Runs an argv inside the sandbox; exit code, stdout and stderr go into its result.

    ``argv`` is a list, or a function of the :class:`NodeContext` returning one (e.g. code handed in
    as a static input). A non-zero exit fails the node. Output is kept up to ``max_output`` bytes
    per stream in the result; the whole of it goes to ``stdout.txt``/``stderr.txt`` in the node dir.
    """

    argv: Sequence[str] | Callable[[NodeContext], Sequence[str]]
    timeout: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    max_output: int = 64 << 10
    kind: ClassVar[str] = "command_node"


@dataclass(frozen=True, slots=True, kw_only=True)
class FileNode(Node):
    """Writes files into its node folder; with ``outcome=True`` they go into the outcome repository.

    ``files`` maps relative names to text or bytes, or is a function of the context returning that.
    """

    files: Mapping[str, str | bytes] | Callable[[NodeContext], Mapping[str, str | bytes]]
    outcome: bool = True
    kind: ClassVar[str] = "file_node"


@dataclass(frozen=True, slots=True)
class Subflow:
    """A flow nested in a flow; its id is the flow's id."""

    flow: FlowDefinition
    kind: ClassVar[str] = "subflow"

    @property
    def id(self) -> str:
        return self.flow.id


@dataclass(frozen=True, slots=True)
class ForEach:
    """Runs ``body`` once per item; iteration N's elements live under ``<id>.iter_N``."""

    id: str
    items: Sequence[Any] | Callable[[NodeContext], Iterable[Any]]
    body: FlowDefinition
    max_iterations: int = 1000
    kind: ClassVar[str] = "for_each"

    def __post_init__(self) -> None:
        _check_id(self.id, "loop id")


@dataclass(frozen=True, slots=True)
class Conditional:
    """Runs ``if_true`` or ``if_false`` (if any) by ``predicate``; under ``<id>.is_true``/``is_false``."""

    id: str
    predicate: Callable[[NodeContext], bool]
    if_true: FlowDefinition
    if_false: FlowDefinition | None = None
    kind: ClassVar[str] = "conditional"

    def __post_init__(self) -> None:
        _check_id(self.id, "conditional id")


FlowElement = Node | Subflow | ForEach | Conditional


def _caller_module() -> str:
    # Called from the dataclass __init__ generated for the definition, two frames above us.
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back  # type: ignore[assignment]
    return frame.f_globals.get("__name__", "__main__") if frame is not None else "__main__"


def _unique(container: str, ids: Iterable[str]) -> None:
    seen: set[str] = set()
    for element_id in ids:
        if element_id in seen:
            raise ElementIdError(f"{container} has two elements with id {element_id!r}; ids are unique within a container")
        seen.add(element_id)


@dataclass(slots=True)
class FlowDefinition:
    """An ordered list of elements, built by chaining::

        FlowDefinition("main").node("a", fn).command("b", ["python3", "-c", "print(1)"]).file("c", {...})
    """

    id: str
    elements: list[FlowElement] = field(default_factory=list)
    defined_in: str = field(default_factory=_caller_module)
    kind: ClassVar[str] = "flow"

    def __post_init__(self) -> None:
        _check_id(self.id, "flow id")
        _unique(f"flow {self.id!r}", (e.id for e in self.elements))

    def add(self, element: FlowElement) -> FlowDefinition:
        """Append any element; returns the flow so calls chain."""
        if any(e.id == element.id for e in self.elements):
            raise ElementIdError(f"flow {self.id!r} already has an element {element.id!r}; ids are unique within a flow")
        self.elements.append(element)
        return self

    def node(
        self,
        node_id: str,
        func: NodeFunction,
        *,
        input_model: type[BaseModel] | None = None,
        output_model: type[BaseModel] | None = None,
        continue_on_error: bool = False,
    ) -> FlowDefinition:
        """Append a function node."""
        return self.add(FunctionNode(id=node_id, func=func, input_model=input_model, output_model=output_model,
                                     continue_on_error=continue_on_error))

    def command(
        self,
        node_id: str,
        argv: Sequence[str] | Callable[[NodeContext], Sequence[str]],
        *,
        input_model: type[BaseModel] | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        continue_on_error: bool = False,
    ) -> FlowDefinition:
        """Append a command node (argv run inside the sandbox)."""
        return self.add(CommandNode(id=node_id, argv=argv, input_model=input_model, timeout=timeout,
                                    env=dict(env or {}), continue_on_error=continue_on_error))

    def file(
        self,
        node_id: str,
        files: Mapping[str, str | bytes] | Callable[[NodeContext], Mapping[str, str | bytes]],
        *,
        outcome: bool = True,
        input_model: type[BaseModel] | None = None,
        continue_on_error: bool = False,
    ) -> FlowDefinition:
        """Append a file node (writes files into its folder, optionally as outcomes)."""
        return self.add(FileNode(id=node_id, files=files, outcome=outcome, input_model=input_model,
                                 continue_on_error=continue_on_error))

    def subflow(self, flow: FlowDefinition) -> FlowDefinition:
        """Append a nested flow."""
        return self.add(Subflow(flow))

    def for_each(
        self,
        loop_id: str,
        items: Sequence[Any] | Callable[[NodeContext], Iterable[Any]],
        body: FlowDefinition,
        *,
        max_iterations: int = 1000,
    ) -> FlowDefinition:
        """Append a loop running ``body`` once per item."""
        return self.add(ForEach(loop_id, items, body, max_iterations))

    def conditional(
        self,
        cond_id: str,
        predicate: Callable[[NodeContext], bool],
        if_true: FlowDefinition,
        if_false: FlowDefinition | None = None,
    ) -> FlowDefinition:
        """Append a branch."""
        return self.add(Conditional(cond_id, predicate, if_true, if_false))

    @property
    def nodes(self) -> list[Node]:
        """The flow's own nodes (not those inside nested elements)."""
        return [e for e in self.elements if isinstance(e, Node)]


@dataclass(slots=True)
class AgentDefinition:
    """An agent: flows and subagents, run in order, each in its own folder under the agent's."""

    id: str
    flows: list[FlowDefinition] = field(default_factory=list)
    subagents: list[AgentDefinition] = field(default_factory=list)
    defined_in: str = field(default_factory=_caller_module)
    elements: list[FlowDefinition | AgentDefinition] = field(init=False, default_factory=list)
    kind: ClassVar[str] = "agent"

    def __post_init__(self) -> None:
        _check_id(self.id, "agent id")
        self.elements = [*self.flows, *self.subagents]
        _unique(f"agent {self.id!r}", (e.id for e in self.elements))

    def flow(self, flow: FlowDefinition) -> AgentDefinition:
        """Append a flow; returns the agent so calls chain."""
        return self._append(flow, self.flows)

    def subagent(self, agent: AgentDefinition) -> AgentDefinition:
        """Append a subagent; returns the agent so calls chain."""
        return self._append(agent, self.subagents)

    def _append(self, element: FlowDefinition | AgentDefinition, into: list[Any]) -> AgentDefinition:
        if any(e.id == element.id for e in self.elements):
            raise ElementIdError(f"agent {self.id!r} already has an element {element.id!r}")
        into.append(element)
        self.elements.append(element)
        return self


Component = FlowDefinition | AgentDefinition


def static_paths(component: Component) -> dict[str, Any]:
    """Every hierarchy path known before running (loop iterations excluded) -> its element.

    Loop bodies are listed once under ``<loop>.iter_N`` as a pattern, so bare node ids inside loops
    still count when checking static inputs.
    """
    out: dict[str, Any] = {}

    def children(element: Any) -> list[tuple[str, Any]]:
        """``(path segment(s), child)`` pairs below an element, in order."""
        if isinstance(element, AgentDefinition | FlowDefinition):
            return [(c.id, c) for c in element.elements]
        if isinstance(element, Subflow):
            return [(c.id, c) for c in element.flow.elements]
        if isinstance(element, ForEach):
            return [(f"iter_N.{c.id}", c) for c in element.body.elements]
        if isinstance(element, Conditional):
            branches = (("is_true", element.if_true), ("is_false", element.if_false))
            return [(f"{name}.{c.id}", c) for name, flow in branches if flow is not None for c in flow.elements]
        return []

    def walk(element: Any, path: str) -> None:
        out[path] = element
        for segment, child in children(element):
            walk(child, f"{path}.{segment}")

    walk(component, component.id)
    return out
