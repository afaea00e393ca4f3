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

import asyncio
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
)
from dad_sandbox.errors import ComponentReferenceError, NodeError, RerunTargetError, RunSetupError, StaticInputsError
from dad_sandbox.run import RunContext, RunReason, RunStatus
from dad_sandbox.run._layout import LOGS_FILE, METRICS_FILE, STATIC_INPUTS_DIR, STATIC_INPUTS_FILE, TRACE_FILE
from dad_sandbox.runner._metrics import MetricsEmitter
from dad_sandbox.runner._nodes import CommandFailed, run_node
from dad_sandbox.runner._preflight import ComponentDescription, preflight
from dad_sandbox.runner._reference import reference_of
from dad_sandbox.runner._trace import TraceWriter

log = get_logger(__name__)

#: What the isolation fields (image, runtime, policy) of an in-process run say.
IN_PROCESS = "in-process"


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
    def reason(self) -> RunReason | None:
        """Why it failed, in the status vocabulary: ``node_failed`` (a node), ``rerun_target`` (a part
        to load is missing from the previous run) or ``component_error`` (a loop's items, a predicate)."""
        if self.status == "completed":
            return None
        if self.failed_path:
            return RunReason.NODE_FAILED
        if (self.error or "").startswith(RerunTargetError.__name__):
            return RunReason.RERUN_TARGET
        return RunReason.COMPONENT_ERROR

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
        self.log_file = runner.log_file

    def emit(self, level: str, event: str, **fields: Any) -> None:
        """Log a runner record; in-process, also append it to ``logs.jsonl`` as the host does for containers."""
        getattr(log, level)(event, **fields)
        if self.log_file is None:
            return
        record = {"ts": datetime.now(UTC).isoformat(), "run_id": self.ctx.run_id, "source": "runner",
                  "stream": "stderr", "level": level, "event": event, "fields": fields}
        try:
            with open(self.log_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, default=str) + "\n")
        except OSError as exc:
            log.warning("could not append to logs.jsonl", error=str(exc))

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
        self.emit("info", "branch chosen", node=path, value=taken)
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
        result = NodeResult(node.id, path, "completed", started_at=started.isoformat(), node_type=node.kind)
        self.emit("info", "node started", node=path, node_type=node.kind)
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
            self.emit("error", "node failed", node=path, error=result.error.splitlines()[0] if result.error else "")
        else:
            self.emit("info", "node completed", node=path, duration_seconds=result.duration_seconds)
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
                f"{STATIC_INPUTS_DIR}/{STATIC_INPUTS_FILE}"
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
        #: In-process runs write their runner records here themselves; in a container the host
        #: turns the runner's stderr into ``logs.jsonl``, so this stays None there.
        self.log_file: Path | None = None

    @property
    def reference(self) -> str:
        """``module:attribute`` of the component, for the container to import."""
        return self._reference or reference_of(self.component, self.run_context.project_root)

    def setup_run(self) -> None:
        """DAD compatibility: checks the context is set up (``RunContext.setup_run()`` does the work)."""
        if not self.run_context.is_set_up:
            raise RunSetupError("call run_context.setup_run() before running a component")

    def validate(self) -> ComponentDescription:
        """Check the re-run start path and every static input (keys, types) before anything runs.

        Raises:
            RerunTargetError: the start path matches no element of the component.
            StaticInputsError: a key names no node, is ambiguous, or a value does not fit the node's model.
        """
        return preflight(self.component, self.run_context)

    async def run(self) -> ComponentResult:
        """Run the component in THIS process, not isolated; raises :class:`NodeError` if a node fails.

        Use ``IsolatedExecution(run_context).run(runner)`` to run it in a container. The run dir gets
        the same files, statuses and reasons as an isolated run; the isolation fields say ``in-process``.
        """
        self.setup_run()
        ctx = self.run_context
        try:
            self.validate()
        except (RerunTargetError, StaticInputsError) as exc:
            reason = RunReason.RERUN_TARGET if isinstance(exc, RerunTargetError) else RunReason.INVALID_INPUTS
            if not ctx.metadata.status.is_terminal:
                ctx.record(status=RunStatus.FAILED, reason=reason, error=str(exc), **self._in_process_fields())
            raise
        log.warning("running in-process: the component is NOT isolated", run_id=ctx.run_id, component=self.component.id)
        ctx.record(status=RunStatus.RUNNING, **self._in_process_fields())
        self.log_file = ctx.layout.trace_dir / LOGS_FILE
        try:
            result = await self.execute()
        except BaseException as exc:  # execute() keeps Exceptions as a failed result: this is Ctrl-C, cancel, exit
            cancelled = isinstance(exc, KeyboardInterrupt | asyncio.CancelledError)
            ctx.record(status=RunStatus.CANCELLED if cancelled else RunStatus.CRASHED,
                       reason=RunReason.CANCELLED if cancelled else RunReason.INTERRUPTED, error=f"{type(exc).__name__}: {exc}")
            raise
        if result.status != "completed":
            ctx.record(status=RunStatus.FAILED, reason=result.reason, error=result.error)
            ctx.commit_outcomes()
            raise NodeError(result.error or "a node failed", hierarchy_path=result.failed_path or self.component.id)
        ctx.record(status=RunStatus.COMPLETED)
        ctx.commit_outcomes()
        return result

    def _in_process_fields(self) -> dict[str, Any]:
        """Metadata of an in-process run: the isolation fields say so instead of naming a container."""
        try:
            reference: str | None = self.reference
        except ComponentReferenceError:
            reference = None  # e.g. defined in __main__: it ran, but cannot be re-run by reference
        return {"execution": "in_process", "component": reference or self.component.id, "image": IN_PROCESS,
                "runtime": IN_PROCESS, "policy_name": IN_PROCESS, "policy_hash": None}

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


