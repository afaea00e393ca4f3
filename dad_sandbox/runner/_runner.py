"""Runners execute a component's element tree in order, writing node folders, spans and metrics.

``execute()`` is the one implementation: the in-container entrypoint calls it, and ``run()`` calls
it in the current process (trusted code, debugging) - never isolated, and it says so in the log.
A node that raises ends the component as ``failed`` with the node's hierarchy path and traceback
(unless it opted into ``continue_on_error``); it is never reported as completed.

Re-runs: with ``previous_run_id`` and ``start_hierarchy_path`` on the context, every element
before the start path is *loaded* from the previous run (its folder copied, its output made
available to later nodes, nothing executed); the start element and everything after it run again.
Paths match on dot boundaries only (``b.c`` never matches ``ab.c``).
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import structlog
from pydantic import BaseModel, ValidationError

from dad_sandbox._logging import get_logger
from dad_sandbox.dsl import (
    AgentDefinition,
    Conditional,
    FileNode,
    FlowDefinition,
    ForEach,
    Node,
    NodeContext,
    Subflow,
    static_paths,
)
from dad_sandbox.errors import NodeError, RerunTargetError, RunSetupError, StaticInputsError
from dad_sandbox.run import RunContext, RunStatus
from dad_sandbox.run._layout import METRICS_FILE, TRACE_FILE
from dad_sandbox.runner._metrics import MetricsEmitter
from dad_sandbox.runner._nodes import CommandFailed, run_node
from dad_sandbox.runner._reference import reference_of
from dad_sandbox.runner._trace import TraceWriter

log = get_logger(__name__)


@dataclass(slots=True)
class NodeResult:
    """How one node ended; what ``result.json`` holds. ``loaded``: taken from the previous run."""

    node_id: str
    hierarchy_path: str
    status: str
    output: Any = None
    error: str | None = None
    started_at: str | None = None
    duration_seconds: float = 0.0
    node_type: str = "node"

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "hierarchy_path": self.hierarchy_path,
            "node_type": self.node_type,
            "status": self.status,
            "output": self.output,
            "error": self.error,
            "started_at": self.started_at,
            "duration_seconds": self.duration_seconds,
        }


@dataclass(slots=True)
class ComponentResult:
    """How a whole component ended when executed by a runner."""

    root_id: str
    status: str
    nodes: list[NodeResult] = field(default_factory=list)
    error: str | None = None
    failed_path: str | None = None

    @property
    def outputs(self) -> dict[str, Any]:
        return {n.hierarchy_path: n.output for n in self.nodes}

    def to_json(self) -> dict[str, Any]:
        return {
            "root_id": self.root_id,
            "status": self.status,
            "error": self.error,
            "failed_path": self.failed_path,
            "nodes": [n.to_json() for n in self.nodes],
        }


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def path_matches(path: str, target: str) -> bool:
    """True if ``path`` is ``target`` or an ancestor of it, on dot boundaries."""
    return target == path or target.startswith(path + ".")


class _NodeFailure(Exception):
    def __init__(self, result: NodeResult) -> None:
        super().__init__(result.error)
        self.result = result


@dataclass(slots=True)
class _Scope:
    """Loop variables visible to the elements inside a loop iteration."""

    item: Any = None
    index: int | None = None


class _Execution:
    """One pass over a component's element tree."""

    def __init__(self, runner: ComponentRunner, tracer: TraceWriter, metrics: MetricsEmitter) -> None:
        self.ctx = runner.run_context
        self.tracer = tracer
        self.metrics = metrics
        self.results: dict[str, Any] = {}
        self.result = ComponentResult(root_id=runner.component.id, status="completed")
        start = self.ctx.start_hierarchy_path if self.ctx.previous_run_id else None
        self.start: str | None = start
        self.started = start is None
        self.previous_dir = self.ctx.previous_run_dir

    # ---- re-run phases
    def phase(self, path: str) -> str:
        """``run`` (execute), ``enter`` (an ancestor of the start: descend) or ``load`` (copy from previous)."""
        if self.started:
            return "run"
        assert self.start is not None
        if path == self.start:
            self.started = True
            return "run"
        if path_matches(path, self.start):
            return "enter"
        return "load"

    def load(self, path: str) -> None:
        """Copy an element's folder from the previous run and make its nodes' outputs available."""
        assert self.previous_dir is not None
        src = self.ctx.layout.node_dir(path).relative_to(self.ctx.run_dir)
        source = self.previous_dir / src
        target = self.ctx.run_dir / src
        if not source.is_dir() or source.is_symlink():
            raise RerunTargetError(
                f"cannot load {path!r} from previous run {self.ctx.previous_run_id}: it has no folder there "
                "(did that run stop before it?); re-run from an earlier element"
            )
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
        with self.tracer.span(path.rsplit(".", 1)[-1], **{"dad.hierarchy_path": path, "dad.rerun.loaded_from":
                                                           self.ctx.previous_run_id}):
            for result_file in sorted(target.rglob("result.json")):
                try:
                    data = json.loads(result_file.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise RerunTargetError(f"previous result {result_file} is unreadable: {exc}") from exc
                node_path = data.get("hierarchy_path", "")
                node_id = data.get("node_id", "")
                self.results[node_path] = self.results[node_id] = data.get("output")
                self.result.nodes.append(NodeResult(node_id, node_path, "loaded", data.get("output"),
                                                    node_type=data.get("node_type", "node")))

    # ---- walking
    async def agent(self, agent: AgentDefinition, path: str) -> None:
        for child in agent.elements:
            await self.element(child, f"{path}.{child.id}", _Scope())

    async def flow(self, flow: FlowDefinition, path: str, scope: _Scope) -> None:
        for child in flow.elements:
            await self.element(child, f"{path}.{child.id}", scope)

    async def element(self, element: Any, path: str, scope: _Scope) -> None:
        phase = self.phase(path)
        if phase == "load":
            self.load(path)
            return
        entered_before = self.started
        if isinstance(element, Node):
            await self.node(element, path, scope)
            return
        with self.tracer.span(element.id, **_attrs(element.id, path, getattr(element, "kind", "agent"))):
            if isinstance(element, AgentDefinition):
                await self.agent(element, path)
            elif isinstance(element, FlowDefinition):
                await self.flow(element, path, scope)
            elif isinstance(element, Subflow):
                await self.flow(element.flow, path, scope)
            elif isinstance(element, ForEach):
                await self.for_each(element, path, scope)
            elif isinstance(element, Conditional):
                await self.conditional(element, path, scope)
            else:
                raise TypeError(f"unknown element {type(element).__name__} at {path}")
        if phase == "enter" and not entered_before and not self.started:
            self.started = True  # the start was inside but never reached (e.g. another branch ran): go on

    def _context(self, element_id: str, path: str, node_dir: Path, scope: _Scope, node_input: Any = None) -> NodeContext:
        return NodeContext(element_id, path, node_dir, self.ctx.run_id, node_input, dict(self.results),
                           log.bind(node=path), scope.item, scope.index)

    async def for_each(self, loop: ForEach, path: str, scope: _Scope) -> None:
        ctx = self._context(loop.id, path, self.ctx.layout.node_dir(path), scope)
        items: Iterable[Any] = loop.items(ctx) if callable(loop.items) else loop.items
        for index, item in enumerate(items):
            if index >= loop.max_iterations:
                raise RuntimeError(f"loop {path!r} passed its max_iterations of {loop.max_iterations}")
            iter_path = f"{path}.iter_{index}"
            with self.tracer.span(f"iter_{index}", **_attrs(f"iter_{index}", iter_path, "loop_iteration")):
                await self.flow(loop.body, iter_path, _Scope(item, index))

    async def conditional(self, cond: Conditional, path: str, scope: _Scope) -> None:
        ctx = self._context(cond.id, path, self.ctx.layout.node_dir(path), scope)
        taken = bool(cond.predicate(ctx))
        branch = cond.if_true if taken else cond.if_false
        log.info("branch chosen", node=path, value=taken)
        if branch is not None:
            await self.flow(branch, f"{path}.{'is_true' if taken else 'is_false'}", scope)

    async def node(self, node: Node, path: str, scope: _Scope) -> None:
        with self.tracer.span(node.id, **_attrs(node.id, path, node.kind)) as span:
            result = await self._run_node(node, path, scope)
            self.result.nodes.append(result)
            span.attributes["dad.node.status"] = result.status
            if result.status != "completed":
                span.set_error(result.error.splitlines()[0] if result.error else "failed")
                if not node.continue_on_error:
                    raise _NodeFailure(result)

    async def _run_node(self, node: Node, path: str, scope: _Scope) -> NodeResult:
        node_dir = self.ctx.layout.node_dir(path)
        node_dir.mkdir(parents=True, exist_ok=True)
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        node_log = log.bind(node=path)
        result = NodeResult(node.id, path, "completed", started_at=started.isoformat(), node_type=node.kind)
        node_log.info("node started", node_type=node.kind)
        try:
            ctx = self._context(node.id, path, node_dir, scope, self._node_input(node, path))
            value, result.output = await run_node(node, ctx)
            self.results[node.id] = self.results[path] = value
        except CommandFailed as exc:
            result.status, result.output, result.error = "failed", exc.output, str(exc)
        except Exception as exc:
            result.status = "failed"
            result.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        result.duration_seconds = round(time.perf_counter() - t0, 6)
        if result.status == "failed":
            node_log.error("node failed", error=result.error.splitlines()[0] if result.error else "")
        else:
            node_log.info("node completed", duration_seconds=result.duration_seconds)
        self.metrics.emit("dad.node.duration", result.duration_seconds, unit="s", hierarchy_path=path, node_type=node.kind)
        self.metrics.emit("dad.node.success" if result.status == "completed" else "dad.node.failure", 1,
                          hierarchy_path=path, node_type=node.kind)
        _write_json(node_dir / "result.json", result.to_json())
        files = [f["name"] for f in result.output["files"]] if isinstance(node, FileNode) and node.outcome and \
            result.status == "completed" else []
        _write_json(node_dir / "outcome.json", {"node_id": node.id, "hierarchy_path": path, "status": result.status,
                                                "outcome": result.output, "files": files})
        return result

    def _node_input(self, node: Node, path: str) -> BaseModel | None:
        """The node's static input validated into its model; the model's defaults when none was given."""
        if node.input_model is None:
            return None
        value = self.ctx.static_inputs.get(node.id, node.input_model, path)
        if value is not None:
            return value
        try:
            return node.input_model()
        except ValidationError as exc:
            raise StaticInputsError(
                f"node {path!r} needs a static input of type {node.input_model.__name__} (it has required fields): "
                f"register one with run_context.register_node_static_input({node.id!r}, ...) or put it in "
                f"static_inputs/static_inputs.json"
            ) from exc


def _attrs(element_id: str, path: str, element_type: str) -> dict[str, Any]:
    return {"dad.element.id": element_id, "dad.hierarchy_path": path, "dad.element.type": element_type}


class ComponentRunner:
    """Base of :class:`FlowRunner` and :class:`AgentRunner`."""

    component_type: ClassVar[type]

    def __init__(self, component: FlowDefinition | AgentDefinition, run_context: RunContext, *, reference: str | None = None) -> None:
        if not isinstance(component, self.component_type):
            raise TypeError(
                f"{type(self).__name__} runs a {self.component_type.__name__}, got {type(component).__name__}"
            )
        self.component = component
        self.run_context = run_context
        self._reference = reference
        self.metrics: MetricsEmitter | None = None

    @property
    def reference(self) -> str:
        """``module:attribute`` of the component, for the container to import."""
        return self._reference or reference_of(self.component, self.run_context.project_root)

    def setup_run(self) -> None:
        """DAD compatibility: checks the context is set up (``RunContext.setup_run()`` does the work)."""
        if not self.run_context.is_set_up:
            raise RunSetupError("call run_context.setup_run() before running a component")

    def validate(self) -> None:
        """Check the re-run start path and the static input keys against the component, before running.

        Raises:
            RerunTargetError: the start path matches no element of the component.
            StaticInputsError: a key names no node, or a bare node id is ambiguous.
        """
        ctx = self.run_context
        paths = static_paths(self.component)
        start = ctx.start_hierarchy_path
        if ctx.previous_run_id and start is not None:
            if start not in paths:
                near = [p for p in paths if p.rsplit(".", 1)[-1] == start.rsplit(".", 1)[-1]]
                hint = f"; did you mean {', '.join(sorted(near))}?" if near else ""
                raise RerunTargetError(
                    f"start path {start!r} matches no element of {self.component.id!r} (paths are "
                    f"dot-separated from the root, e.g. {next(iter(sorted(paths, key=len)[1:]), self.component.id)!r}){hint}"
                )
        nodes = {p: e for p, e in paths.items() if isinstance(e, Node)}
        for key in ctx.static_inputs.keys():
            if "." in key:
                pattern = key
                if pattern not in nodes and not any(_loop_match(p, pattern) for p in nodes):
                    raise StaticInputsError(f"static input key {key!r} names no node of {self.component.id!r}")
                continue
            candidates = sorted(p for p, n in nodes.items() if n.id == key)
            if not candidates:
                raise StaticInputsError(
                    f"static input key {key!r} names no node of {self.component.id!r}; nodes: "
                    f"{', '.join(sorted({n.id for n in nodes.values()}))}"
                )
            if len(candidates) > 1:
                raise StaticInputsError(
                    f"static input key {key!r} is ambiguous: nodes {', '.join(candidates)} all have that id; "
                    "key it by full hierarchy path instead"
                )

    async def run(self) -> ComponentResult:
        """Run the component in THIS process, not isolated; raises :class:`NodeError` if a node fails.

        Use ``IsolatedExecution(run_context).run(runner)`` to run it in a container.
        """
        self.setup_run()
        self.validate()
        ctx = self.run_context
        log.warning("running in-process: the component is NOT isolated", run_id=ctx.run_id, component=self.component.id)
        ctx.record(status=RunStatus.RUNNING, execution="in_process", component=self.component.id)
        result = await self.execute()
        if result.status != "completed":
            raise NodeError(result.error or "a node failed", hierarchy_path=result.failed_path or self.component.id)
        return result

    async def execute(self) -> ComponentResult:
        """Execute the element tree; stop at the first failing node. Never raises for a node failure."""
        ctx = self.run_context
        tracer = TraceWriter(ctx.layout.trace_dir / TRACE_FILE, run_id=ctx.run_id)
        metrics = self.metrics or MetricsEmitter(run_id=ctx.run_id, path=ctx.layout.trace_dir / METRICS_FILE)
        execution = _Execution(self, tracer, metrics)
        result = execution.result
        root = self.component
        with structlog.contextvars.bound_contextvars(run_id=ctx.run_id):
            try:
                with tracer.span(root.id, **_attrs(root.id, root.id, "agent" if isinstance(root, AgentDefinition)
                                                   else "flow")) as span:
                    try:
                        if isinstance(root, AgentDefinition):
                            await execution.agent(root, root.id)
                        else:
                            await execution.flow(root, root.id, _Scope())
                    except _NodeFailure as failure:
                        result.status = "failed"
                        result.failed_path = failure.result.hierarchy_path
                        result.error = f"node {failure.result.hierarchy_path} failed: {failure.result.error}"
                        span.set_error(f"node {failure.result.hierarchy_path} failed")
            except Exception as exc:  # outside any node (a loop's items, a predicate, a load): still failed
                result.status = "failed"
                result.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        return result


def _loop_match(static_path: str, key: str) -> bool:
    """``a.loop.iter_N.n`` (static) matches a concrete key ``a.loop.iter_3.n``."""
    s_parts, k_parts = static_path.split("."), key.split(".")
    return len(s_parts) == len(k_parts) and all(
        s == k or (s == "iter_N" and k.startswith("iter_") and k[5:].isdigit()) for s, k in zip(s_parts, k_parts, strict=True)
    )


class FlowRunner(ComponentRunner):
    """Runs a :class:`FlowDefinition`; hierarchy paths are ``flow.node``."""

    component_type = FlowDefinition


class AgentRunner(ComponentRunner):
    """Runs an :class:`AgentDefinition`; hierarchy paths are ``agent.flow.node``."""

    component_type = AgentDefinition


def runner_for(component: FlowDefinition | AgentDefinition, run_context: RunContext, **kwargs: Any) -> ComponentRunner:
    """The runner class that fits a component."""
    cls = AgentRunner if isinstance(component, AgentDefinition) else FlowRunner
    return cls(component, run_context, **kwargs)


