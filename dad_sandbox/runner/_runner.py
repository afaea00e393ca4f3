"""Runners execute a component's nodes in order, writing node folders and spans.

``execute()`` is the one implementation: the in-container entrypoint calls it, and ``run()`` calls
it in the current process (trusted code, debugging) - never isolated, and it says so in the log.
A node that raises ends the component as ``failed`` with the node's hierarchy path and traceback;
it is never reported as completed.
"""

from __future__ import annotations

import inspect
import json
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import structlog
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from dad_sandbox._logging import get_logger
from dad_sandbox.dsl import AgentDefinition, FlowDefinition, FunctionNode, NodeContext
from dad_sandbox.errors import NodeError, RunSetupError, StaticInputsError
from dad_sandbox.run import RunContext, RunStatus
from dad_sandbox.run._layout import TRACE_FILE
from dad_sandbox.runner._reference import reference_of
from dad_sandbox.runner._trace import TraceWriter

log = get_logger(__name__)


@dataclass(slots=True)
class NodeResult:
    """How one node ended; what ``result.json`` holds."""

    node_id: str
    hierarchy_path: str
    status: str
    output: Any = None
    error: str | None = None
    started_at: str | None = None
    duration_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "hierarchy_path": self.hierarchy_path,
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


class _NodeFailure(Exception):
    def __init__(self, result: NodeResult) -> None:
        super().__init__(result.error)
        self.result = result


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

    @property
    def reference(self) -> str:
        """``module:attribute`` of the component, for the container to import."""
        return self._reference or reference_of(self.component, self.run_context.project_root)

    def setup_run(self) -> None:
        """DAD compatibility: checks the context is set up (``RunContext.setup_run()`` does the work)."""
        if not self.run_context.is_set_up:
            raise RunSetupError("call run_context.setup_run() before running a component")

    async def run(self) -> ComponentResult:
        """Run the component in THIS process, not isolated; raises :class:`NodeError` if a node fails.

        Use ``IsolatedExecution(run_context).run(runner)`` to run it in a container.
        """
        self.setup_run()
        ctx = self.run_context
        log.warning("running in-process: the component is NOT isolated", run_id=ctx.run_id, component=self.component.id)
        ctx.record(status=RunStatus.RUNNING, execution="in_process")
        result = await self.execute()
        if result.status != "completed":
            raise NodeError(result.error or "a node failed", hierarchy_path=result.failed_path or self.component.id)
        return result

    async def execute(self) -> ComponentResult:
        """Execute every node in order; stop at the first failing node. Never raises for a node failure."""
        ctx = self.run_context
        tracer = TraceWriter(ctx.layout.trace_dir / TRACE_FILE, run_id=ctx.run_id)
        result = ComponentResult(root_id=self.component.id, status="completed")
        with structlog.contextvars.bound_contextvars(run_id=ctx.run_id):
            try:
                with tracer.span(self.component.id, **self._attrs(self.component.id, self.component.id)) as span:
                    try:
                        await self._execute_component(tracer, result)
                    except _NodeFailure as failure:
                        result.status = "failed"
                        result.failed_path = failure.result.hierarchy_path
                        result.error = f"node {failure.result.hierarchy_path} failed: {failure.result.error}"
                        span.set_error(f"node {failure.result.hierarchy_path} failed")
            except Exception as exc:  # a bug outside any node: still a failed component, never completed
                result.status = "failed"
                result.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        return result

    async def _execute_component(self, tracer: TraceWriter, result: ComponentResult) -> None:
        raise NotImplementedError

    async def _execute_flow(self, flow: FlowDefinition, prefix: str, tracer: TraceWriter, result: ComponentResult) -> None:
        results: dict[str, Any] = {}
        for node in flow.nodes:
            path = f"{prefix}.{node.id}"
            with tracer.span(node.id, **self._attrs(node.id, path, "function_node")) as span:
                node_result = await self._execute_node(node, path, results)
                result.nodes.append(node_result)
                if node_result.status != "completed":
                    span.set_error(node_result.error.splitlines()[0] if node_result.error else "failed")
                    raise _NodeFailure(node_result)

    @staticmethod
    def _attrs(element_id: str, path: str, element_type: str | None = None) -> dict[str, Any]:
        attrs = {"dad.element.id": element_id, "dad.hierarchy_path": path}
        if element_type:
            attrs["dad.element.type"] = element_type
        return attrs

    def _node_input(self, node: FunctionNode, path: str) -> BaseModel | None:
        """The node's static input validated into its model; the model's defaults when none was given."""
        if node.input_model is None:
            return None
        value = self.run_context.static_inputs.get(node.id, node.input_model, path)
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

    async def _execute_node(self, node: FunctionNode, path: str, results: dict[str, Any]) -> NodeResult:
        ctx = self.run_context
        node_dir = ctx.layout.node_dir(path)
        node_dir.mkdir(parents=True, exist_ok=True)
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        node_log = log.bind(node=path)
        node_result = NodeResult(node.id, path, "completed", started_at=started.isoformat())
        try:
            node_input = self._node_input(node, path)
            node_ctx = NodeContext(node.id, path, node_dir, ctx.run_id, node_input, dict(results), node_log)
            value = node.func(node_ctx)
            if inspect.isawaitable(value):
                value = await value
            if node.output_model is not None and not isinstance(value, node.output_model):
                value = node.output_model.model_validate(value)
            output = value.model_dump(mode="json") if isinstance(value, BaseModel) else to_jsonable_python(value)
            results[node.id] = value
            node_result.output = output
        except Exception as exc:
            node_result.status = "failed"
            node_result.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            node_log.error("node failed", error=f"{type(exc).__name__}: {exc}")
        node_result.duration_seconds = round(time.perf_counter() - t0, 6)
        _write_json(node_dir / "result.json", node_result.to_json())
        _write_json(
            node_dir / "outcome.json",
            {"node_id": node.id, "hierarchy_path": path, "status": node_result.status, "outcome": node_result.output},
        )
        if node_result.status == "completed":
            node_log.info("node completed", duration_seconds=node_result.duration_seconds)
        return node_result


class FlowRunner(ComponentRunner):
    """Runs a :class:`FlowDefinition`; hierarchy paths are ``flow.node``."""

    component_type = FlowDefinition

    async def _execute_component(self, tracer: TraceWriter, result: ComponentResult) -> None:
        assert isinstance(self.component, FlowDefinition)
        await self._execute_flow(self.component, self.component.id, tracer, result)


class AgentRunner(ComponentRunner):
    """Runs an :class:`AgentDefinition`; hierarchy paths are ``agent.flow.node``."""

    component_type = AgentDefinition

    async def _execute_component(self, tracer: TraceWriter, result: ComponentResult) -> None:
        assert isinstance(self.component, AgentDefinition)
        for flow in self.component.flows:
            path = f"{self.component.id}.{flow.id}"
            with tracer.span(flow.id, **self._attrs(flow.id, path, "flow")):
                await self._execute_flow(flow, path, tracer, result)


def runner_for(component: FlowDefinition | AgentDefinition, run_context: RunContext, **kwargs: Any) -> ComponentRunner:
    """The runner class that fits a component."""
    cls = AgentRunner if isinstance(component, AgentDefinition) else FlowRunner
    return cls(component, run_context, **kwargs)
