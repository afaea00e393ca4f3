"""The host-side supervisor of one run: create, start, watch, and finalize a container.

Why the order of the exit path matters: the container's state (exit code, ``OOMKilled``) is read
BEFORE the container is removed, the final status is written by the host only, and the container
is removed even when the caller is cancelled - the exit path runs as its own task shielded from
cancellation, so a second Ctrl-C cannot leave a container behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dad_sandbox._logging import get_logger
from dad_sandbox.errors import DadSandboxError, EngineError, ExecutionStateError, UnsafePathError
from dad_sandbox.run import RunContext, RunStatus
from dad_sandbox.run import _safe_fs
from dad_sandbox.run._layout import LOGS_FILE, METRICS_FILE, POLICY_FILE, RUNNER_REPORT_FILE, TRACE_DIR
from dad_sandbox.sandbox import _labels, _ownership
from dad_sandbox.sandbox._classify import classify
from dad_sandbox.sandbox._output import OutputSink
from dad_sandbox.sandbox._policy import Policy
from dad_sandbox.sandbox._result import RunResult
from dad_sandbox.sandbox._spec import build_spec
from dad_sandbox.sandbox.engine import ContainerState, Engine

log = get_logger(__name__)

MAX_REPORT_BYTES = 1 << 20
OUTPUT_DRAIN_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Launch:
    """What to run: a command line, plus (for components) the request the entrypoint reads."""

    command: list[str]
    request: dict[str, Any] | None = None
    component: str | None = None


@dataclass(slots=True)
class _Watch:
    """What happened while the container ran; filled in by the run, read by the finalizer."""

    container_id: str | None = None
    started: float | None = None
    deadline_hit: bool = False
    cancelled: bool = False
    failure: BaseException | None = None
    peak_memory: int | None = None
    samples: int = 0
    last_cpu_ns: int | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


class RunSupervisor:
    """Runs one :class:`Launch` for a set-up :class:`RunContext` under a :class:`Policy`."""

    def __init__(self, ctx: RunContext, policy: Policy, engine: Engine) -> None:
        self.ctx = ctx
        self.policy = policy
        self.engine = engine

    async def run(self, launch: Launch) -> RunResult:
        ctx, policy = self.ctx, self.policy
        if ctx.metadata.status != RunStatus.INITIALIZED:
            raise ExecutionStateError(
                f"run {ctx.run_id} is already {ctx.metadata.status.value}; one run directory holds one run - "
                "make a new RunContext and call setup_run() for another run"
            )
        try:
            image_id = await self.engine.image_id(policy.image_ref)
        except EngineError as exc:
            ctx.record(status=RunStatus.CRASHED, reason="engine_error", error=str(exc), execution="isolated")
            raise
        user = _ownership.resolve_user(policy.user)
        _ownership.prepare(ctx.run_dir, user)
        with _safe_fs.opened_dir(ctx.run_dir, TRACE_DIR) as fd:
            _safe_fs.write_atomic(fd, POLICY_FILE, (policy.model_dump_json(indent=2) + "\n").encode())
        deadline = time.time() + policy.timeout
        spec = build_spec(ctx, policy, user, launch.command, deadline=deadline, request=launch.request)
        ctx.record(
            execution="isolated",
            image=policy.image_ref,
            image_id=image_id,
            runtime=policy.runtime,
            policy_name=policy.name,
            policy_hash=policy.hash,
            policy=policy.model_dump(mode="json"),
            command=None if launch.component else launch.command,
            component=launch.component,
            supervisor={
                "host": spec.labels[_labels.SUPERVISOR_HOST],
                "pid": int(spec.labels[_labels.SUPERVISOR_PID]),
                "deadline": datetime.fromtimestamp(deadline, UTC).isoformat(),
            },
        )
        with _safe_fs.opened_dir(ctx.run_dir, TRACE_DIR) as trace_fd:
            logs_fd = _safe_fs.open_append(trace_fd, LOGS_FILE)
            metrics_fd = _safe_fs.open_append(trace_fd, METRICS_FILE)
        sink = OutputSink(logs_fd, limit=policy.output_limit, run_id=ctx.run_id)
        watch = _Watch()
        log.info("run starting", run_id=ctx.run_id, image=policy.image_ref, policy=policy.name)
        try:
            await self._watch(spec, deadline, sink, metrics_fd, watch)
        except asyncio.CancelledError:
            watch.cancelled = True
            raise
        except BaseException as exc:
            watch.failure = exc
            raise
        finally:
            finalizer = asyncio.ensure_future(self._finalize(launch, user, sink, logs_fd, metrics_fd, watch))
            cancelled_while_finalizing = False
            while not finalizer.done():
                try:
                    await asyncio.shield(finalizer)
                except asyncio.CancelledError:
                    cancelled_while_finalizing = True  # finish cleaning up first, re-raise after
            if cancelled_while_finalizing and not watch.cancelled:
                raise asyncio.CancelledError
        return finalizer.result()

    async def _watch(self, spec: Any, deadline: float, sink: OutputSink, metrics_fd: int, watch: _Watch) -> None:
        cid = await self.engine.create(spec)
        watch.container_id = cid
        self.ctx.record(container_id=cid)
        watch.tasks.append(asyncio.create_task(self.engine.stream_output(cid, sink)))
        await self.engine.start(cid)
        watch.started = time.time()
        self.ctx.record(status=RunStatus.RUNNING, started_at=datetime.now(UTC))
        if self.policy.metrics_interval > 0:
            watch.tasks.append(asyncio.create_task(self._sample(cid, metrics_fd, watch)))
        code = await self.engine.wait(cid, timeout=deadline - time.time())
        if code is None:
            watch.deadline_hit = True
            log.warning("deadline passed: killing the container", run_id=self.ctx.run_id, timeout=self.policy.timeout)
            await self.engine.kill(cid)

    async def _sample(self, cid: str, fd: int, watch: _Watch) -> None:
        while True:
            sample = await self.engine.stats(cid)
            if sample is not None:
                peak = sample.get("memory_max_bytes") or sample.get("memory_bytes")
                if peak is not None:
                    watch.peak_memory = max(watch.peak_memory or 0, int(peak))
                if sample.get("cpu_total_ns") is not None:
                    watch.last_cpu_ns = int(sample["cpu_total_ns"])
                record = {"ts": datetime.now(UTC).isoformat(), "run_id": self.ctx.run_id, "source": "supervisor",
                          "name": "container.resources", **sample}
                os.write(fd, (json.dumps(record) + "\n").encode())
                watch.samples += 1
            await asyncio.sleep(self.policy.metrics_interval)

    async def _finalize(
        self, launch: Launch, user: _ownership.RunUser, sink: OutputSink, logs_fd: int, metrics_fd: int, watch: _Watch
    ) -> RunResult:
        ctx, engine, cid = self.ctx, self.engine, watch.container_id
        state: ContainerState | None = None
        problems: list[str] = []
        for task in watch.tasks[1:]:
            task.cancel()
        if cid is not None:
            if watch.cancelled or watch.failure is not None:
                await self._quietly(engine.kill(cid), problems)
            try:
                state = await engine.inspect(cid)  # BEFORE remove: exit code and OOMKilled live here
                if state.running:
                    await self._quietly(engine.kill(cid), problems)
                    state = await engine.inspect(cid)
            except DadSandboxError as exc:
                problems.append(f"could not read the container state: {exc}")
        if watch.tasks:
            _, pending = await asyncio.wait(watch.tasks[:1], timeout=OUTPUT_DRAIN_TIMEOUT)
            for task in pending:
                task.cancel()
                problems.append("the output stream did not end in time; output may be incomplete")
            for task in watch.tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    problems.append(f"output/metrics collection failed: {task.exception()}")
        output = sink.finish()
        os.close(logs_fd)
        os.close(metrics_fd)
        try:
            _ownership.reclaim(ctx.run_dir, user)
        except OSError as exc:
            problems.append(f"could not hand the run dir back to uid {user.host_uid}: {exc}")
        report = self._read_report() if launch.component else None

        if cid is None and watch.failure is not None and not watch.cancelled:
            status, reason = RunStatus.CRASHED, "engine_error"
        else:
            status, reason = classify(state, deadline_hit=watch.deadline_hit, cancelled=watch.cancelled)
        if launch.component and status == RunStatus.COMPLETED and (report or {}).get("status") != "completed":
            status, reason = RunStatus.FAILED, "runner_report"
        elif status == RunStatus.FAILED and report and report.get("failed_path"):
            reason = "node_failed"
        elif status == RunStatus.FAILED and report and report.get("status") == "failed":
            reason = "component_load"
        error = self._error_text(status, reason, state, report, sink, watch, problems)
        resources: dict[str, Any] = {"samples": watch.samples}
        if watch.peak_memory is not None:
            resources["peak_memory_bytes"] = watch.peak_memory
        if watch.last_cpu_ns is not None:
            resources["cpu_seconds"] = round(watch.last_cpu_ns / 1e9, 3)
        if self.policy.memory:
            resources["memory_limit_bytes"] = self.policy.memory
        md = ctx.record(
            status=status,
            reason=reason,
            error=error,
            exit_code=state.exit_code if state else None,
            output=output,
            resources=resources,
        )
        if cid is not None:
            try:
                await engine.remove(cid)
            except DadSandboxError as exc:
                log.error("could not remove the container; 'dad-sandbox gc' will", run_id=ctx.run_id, error=str(exc))
        log.info("run finished", run_id=ctx.run_id, status=md.status.value, reason=md.reason,
                 duration_seconds=md.duration_seconds)
        nodes = [
            {k: n.get(k) for k in ("hierarchy_path", "status", "output", "duration_seconds")}
            for n in (report or {}).get("nodes", [])
            if isinstance(n, dict)
        ]
        return RunResult.from_metadata(md, ctx.run_dir, nodes)

    @staticmethod
    async def _quietly(call: Any, problems: list[str]) -> None:
        try:
            await call
        except DadSandboxError as exc:
            problems.append(str(exc))

    def _read_report(self) -> dict[str, Any] | None:
        """The runner's own account of the component (untrusted: bounded, validated, never fatal)."""
        try:
            with _safe_fs.opened_dir(self.ctx.run_dir, TRACE_DIR) as fd:
                data, truncated = _safe_fs.read_bounded(fd, RUNNER_REPORT_FILE, MAX_REPORT_BYTES)
            if truncated or not data.strip():
                return None
            report = json.loads(data)
        except (OSError, ValueError, UnsafePathError):
            return None
        return report if isinstance(report, dict) else None

    def _error_text(
        self,
        status: RunStatus,
        reason: str | None,
        state: ContainerState | None,
        report: dict[str, Any] | None,
        sink: OutputSink,
        watch: _Watch,
        problems: list[str],
    ) -> str | None:
        parts: list[str] = []
        if status == RunStatus.TIMED_OUT:
            parts.append(f"the run passed its {self.policy.timeout:g}s deadline and was killed")
        elif status == RunStatus.OOM_KILLED:
            limit = f" of {self.policy.memory} bytes" if self.policy.memory else ""
            what = "a process in the run was" if reason == "oom:child" else "the run was"
            parts.append(f"{what} killed for going over the memory limit{limit}")
        elif status == RunStatus.CANCELLED:
            parts.append("the run was cancelled; its container was killed")
        elif status == RunStatus.CRASHED:
            if watch.failure is not None:
                parts.append(f"the sandbox failed: {watch.failure}")
            elif reason and reason.startswith("signal:"):
                parts.append(f"the run was killed by {reason.removeprefix('signal:')}")
            else:
                parts.append("the container ended without a readable state")
            if state is not None and state.error:
                parts.append(f"engine: {state.error}")
        elif status == RunStatus.FAILED:
            if report and report.get("error"):
                parts.append(str(report["error"]))
            elif reason == "runner_report":
                parts.append("the component exited 0 but left no completed runner report")
            else:
                parts.append(f"the command exited with code {state.exit_code if state else '?'}")
        if status != RunStatus.COMPLETED and not (report and report.get("error")):
            tail = sink.stderr_tail().strip()
            if tail:
                parts.append(f"last stderr:\n{tail}")
        parts.extend(problems)
        return "\n".join(parts) or None
