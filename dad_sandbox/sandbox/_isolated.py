"""``IsolatedExecution``: the DAD context manager, where each run really gets its own container.

    async with IsolatedExecution(run_context, policy="untrusted") as execution:
        result = await execution.run(runner)            # a component, in a container
        # or: await execution.run_command(["python3", "-c", "print(1)"])

Entering checks the policy and the engine up front, so a typo or a stopped engine fails before
anything runs. One run context holds one run: a second ``run`` on the same context is refused.
"""

from __future__ import annotations

import asyncio
import enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from dad_sandbox.errors import (
    ComponentReferenceError,
    DadSandboxError,
    ExecutionStateError,
    RerunTargetError,
    RunError,
    StaticInputsError,
)
from dad_sandbox.run import RunContext, RunReason, RunStatus
from dad_sandbox.sandbox._container_run import ContainerRun, Launch
from dad_sandbox.sandbox._output import LineHook, Observer
from dad_sandbox.sandbox._policy import Policy, load_policy
from dad_sandbox.sandbox._pool import Slot
from dad_sandbox.sandbox._result import RunResult
from dad_sandbox.sandbox._spec import CONTAINER_PROJECT
from dad_sandbox.sandbox.engine import Engine

if TYPE_CHECKING:
    from dad_sandbox.runner import ComponentRunner

ENTRYPOINT = ["python3", "-m", "dad_sandbox.sandbox._entrypoint"]


class ExecutionState(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class IsolatedExecution:
    """Runs one run of ``run_context`` in its own container under ``policy``.

    Args:
        run_context: a context after ``setup_run()``.
        policy: a policy name (``untrusted``, ``default``), a path to a TOML file, or a :class:`Policy`.
        engine: the container engine; the local Docker engine by default.
        timeout: overrides the policy's wall-clock timeout (seconds).
        on_event: called (from a worker thread) with each structured record the runner logs, e.g.
            ``{"event": "node started", "fields": {"node": "agent.flow.n"}}``; for progress displays.
        slot: a warm-pool slot whose folder is already this context's run dir (``Supervisor`` does this).
    """

    def __init__(
        self,
        run_context: RunContext,
        policy: str | Path | Policy = "untrusted",
        *,
        engine: Engine | None = None,
        timeout: float | None = None,
        on_event: Observer | None = None,
        slot: Slot | None = None,
        on_line: LineHook | None = None,
    ) -> None:
        self.run_context = run_context
        self._policy_arg = policy
        self._timeout = timeout
        self._engine = engine
        self._on_event = on_event
        self._on_line = on_line
        self._slot = slot
        self._state = ExecutionState.UNOPENED
        self._used = False
        self.policy: Policy | None = None

    async def __aenter__(self) -> IsolatedExecution:
        if self._state is not ExecutionState.UNOPENED:
            raise ExecutionStateError(
                f"this IsolatedExecution is {self._state.value}; make a new one for each `async with`"
            )
        if not self.run_context.is_set_up:
            raise ExecutionStateError("call run_context.setup_run() before entering IsolatedExecution")
        try:
            policy = load_policy(self._policy_arg)
            if self._timeout is not None:
                policy = policy.with_overrides(timeout=self._timeout)
            self.policy = policy
            if self._engine is None:
                from dad_sandbox.sandbox.engine._select import default_engine

                self._engine = default_engine()
            await self._engine.info()  # fail early and clearly when no engine answers (asked once per engine)
        except DadSandboxError as exc:
            # a pre-flight failure ends the run at once: it never stays `initialized`
            if self.run_context.metadata.status == RunStatus.INITIALIZED:
                self.run_context.record(status=RunStatus.FAILED, reason=RunReason.PREFLIGHT, error=str(exc))
            raise
        except asyncio.CancelledError:
            if self.run_context.metadata.status == RunStatus.INITIALIZED:
                self.run_context.record(status=RunStatus.CANCELLED, reason=RunReason.CANCELLED,
                                        error="cancelled before its container was created")
            raise
        self._state = ExecutionState.OPENED
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._state = ExecutionState.CLOSED

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise ExecutionStateError("IsolatedExecution is not entered: use `async with IsolatedExecution(...)`")
        return self._engine

    def _claim(self) -> Policy:
        if self._state is not ExecutionState.OPENED or self.policy is None:
            raise ExecutionStateError("use IsolatedExecution inside `async with IsolatedExecution(...) as execution:`")
        if self._used:
            raise ExecutionStateError(
                f"run {self.run_context.run_id} already ran here; one run context holds one run - "
                "make a new RunContext for the next run"
            )
        self._used = True
        return self.policy

    async def run_command(self, argv: list[str]) -> RunResult:
        """Run one command line in a fresh container; its exit code decides the status."""
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("run_command needs a non-empty list of strings, e.g. ['python3', '-c', 'print(1)']")
        policy = self._claim()
        return await self._launch(policy, Launch(command=list(argv)))

    async def _launch(self, policy: Policy, launch: Launch) -> RunResult:
        supervisor = ContainerRun(self.run_context, policy, self.engine, observer=self._on_event, on_line=self._on_line)
        with structlog.contextvars.bound_contextvars(run_id=self.run_context.run_id):
            if self._slot is not None:
                return await supervisor.run_pooled(self._slot, launch)
            return await supervisor.run(launch)

    async def run(self, runner: ComponentRunner) -> RunResult:
        """Run the runner's component inside a fresh container (imported there by reference).

        The caller imported the component object itself, so the host already runs its code; its
        start path and static inputs are checked here, before any container. A component named only
        by reference is run with :meth:`run_component`, which never imports it on the host.
        """
        if runner.run_context is not self.run_context:
            raise ExecutionStateError("the runner was made with a different RunContext than this IsolatedExecution")
        try:
            reference = runner.reference  # fails here, before any container, for __main__ components
            runner.validate()  # a bad re-run start path or static input fails before any container
        except RunError as exc:
            self._refuse(exc)
            raise
        return await self.run_component(reference)

    async def run_component(self, reference: str) -> RunResult:
        """Run the component ``module:attribute`` in a fresh container; the host never imports it.

        The container imports it, checks the re-run start path and the static inputs against it
        before any node runs, and reports back; a refused request ends ``failed`` with reason
        ``component_load``, ``invalid_inputs`` or ``rerun_target``.
        """
        from dad_sandbox.runner import check_reference

        try:
            check_reference(reference)
        except RunError as exc:
            self._refuse(exc)
            raise
        policy = self._claim()
        ctx = self.run_context
        request: dict[str, Any] = {
            "component": reference,
            "root_component_id": ctx.root_component_id,
            "project_root": CONTAINER_PROJECT,
            "previous_run_id": ctx.previous_run_id,
            "start_hierarchy_path": ctx.start_hierarchy_path,
        }
        return await self._launch(policy, Launch(command=ENTRYPOINT, request=request, component=reference))

    def _refuse(self, exc: RunError) -> None:
        """Record a request refused on the host (before any container) with the reason its error names."""
        if self.run_context.metadata.status == RunStatus.INITIALIZED:
            self.run_context.record(status=RunStatus.FAILED, reason=refusal_reason(exc), error=str(exc))


def refusal_reason(exc: BaseException) -> RunReason:
    """The run's reason for a request refused before anything ran."""
    if isinstance(exc, StaticInputsError):
        return RunReason.INVALID_INPUTS
    if isinstance(exc, RerunTargetError):
        return RunReason.RERUN_TARGET
    if isinstance(exc, ComponentReferenceError):
        return RunReason.COMPONENT_LOAD
    return RunReason.INVALID_REQUEST
