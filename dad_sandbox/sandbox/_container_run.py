"""The host-side supervisor of one run: create, start, watch, and finalize a container.

Why the order of the exit path matters: the container's state (exit code, ``OOMKilled``) is read
BEFORE the container is removed, the final status is written by the host only, and the container
is removed even when the caller is cancelled - the exit path runs as its own task shielded from
cancellation, so a second Ctrl-C cannot leave a container behind.

The same watch-and-finalize path serves a fresh run (:meth:`ContainerRun.run`) and a run whose
supervisor died and that a later supervisor re-attaches to (:meth:`ContainerRun.resume`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay, wait_fixed

from dad_sandbox._limits import ENGINE_RETURN_TIMEOUT, FILES_BUDGET_SECONDS, OUTPUT_DRAIN_TIMEOUT
from dad_sandbox._logging import get_logger
from dad_sandbox.errors import (
    DadSandboxError,
    EngineError,
    EngineUnavailable,
    ExecutionStateError,
    PolicyError,
    RunSetupError,
    UnsafePathError,
)
from dad_sandbox.run import RunContext, RunReason, RunStatus, _hostile, _safe_fs
from dad_sandbox.run._collect import Collected, collect_runner_files
from dad_sandbox.run._layout import LOGS_FILE, METRICS_FILE, POLICY_FILE, TRACE_DIR
from dad_sandbox.run._metadata import RecordFields
from dad_sandbox.run._tar_extract import Extracted
from dad_sandbox.run._usage import DirUsage, dir_usage
from dad_sandbox.sandbox import _egress_proxy, _engine_view, _labels, _ownership
from dad_sandbox.sandbox._cancel import run_to_the_end
from dad_sandbox.sandbox._classify import classify, signal_name
from dad_sandbox.sandbox._open_files import deleted_open_bytes
from dad_sandbox.sandbox._output import LineHook, Observer, OutputSink, attach_output
from dad_sandbox.sandbox._policy import Policy
from dad_sandbox.sandbox._pool import Slot, pointer_file
from dad_sandbox.sandbox._remote_rundir import RemoteRunDir
from dad_sandbox.sandbox._report import report_reason, reported_component_id
from dad_sandbox.sandbox._result import RunResult
from dad_sandbox.sandbox._spec import (
    INIT_DEADLINE_EXIT,
    INIT_DEADLINE_GRACE,
    REQUEST_ENV,
    build_spec,
    container_env_params,
)
from dad_sandbox.sandbox.engine import ContainerSpec, ContainerState, Engine

log = get_logger(__name__)



@dataclass(frozen=True, slots=True)
class Launch:
    """What to run: a command line, plus (for components) the request the entrypoint reads."""

    command: list[str]
    request: dict[str, Any] | None = None
    component: str | None = None


@dataclass(slots=True)
class _Watch:
    """What happened while the container ran; filled in by the watchers, read by the finalizer."""

    container_id: str
    component: str | None
    user: _ownership.RunUser
    deadline: float
    channel: str | None = None  # prefix of runner records on stderr; None for a plain command
    deadline_hit: bool = False
    cancelled: bool = False
    started: bool = False  # the engine started the container (a never-started one has no output to drain)
    limit_hit: RunReason | None = None
    engine_lost: bool = False
    failure: BaseException | None = None
    peak_memory: int | None = None
    cpu_ns: int | None = None
    samples: int = 0
    run_dir_bytes: int | None = None
    limit_detail: str | None = None
    pid: int | None = None  # host pid of the container's first process, for open-but-deleted files
    pump: asyncio.Task[Any] | None = None  # the output stream; drained, never cancelled first
    egress: _egress_proxy.EgressProxy | None = None  # policy network = "allowlist": closed in finalization
    remote: RemoteRunDir | None = None  # copy mode: the run dir travels through the Engine API
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)  # monitor, import warm-up: cancelled at the end


@dataclass(slots=True)
class _Files:
    """What the host found in a finished run's directory (see ``ContainerRun._settle_files``)."""

    usage: DirUsage = field(default_factory=lambda: DirUsage(0, 0, False, "not measured"))
    collected: Collected = field(default_factory=Collected)
    tampering: list[str] = field(default_factory=list)
    #: copy mode: why the run dir came back incomplete, as (reason, detail) - or None
    copy_breach: tuple[RunReason, str] | None = None




class ContainerRun:
    """Runs one :class:`Launch` for a set-up :class:`RunContext` under a :class:`Policy`."""

    def __init__(self, ctx: RunContext, policy: Policy, engine: Engine, *, observer: Observer | None = None,
                 on_line: LineHook | None = None) -> None:
        self.ctx = ctx
        self.policy = policy
        self.engine = engine
        self.observer = observer
        self.on_line = on_line

    # ------------------------------------------------------------------ entry points

    async def run(self, launch: Launch) -> RunResult:
        """Create and start a fresh container for the run and supervise it to the end."""
        ctx, policy = self.ctx, self.policy
        if ctx.metadata.status != RunStatus.INITIALIZED:
            raise ExecutionStateError(
                f"run {ctx.run_id} is already {ctx.metadata.status.value}; one run directory holds one run - "
                "make a new RunContext and call setup_run() for another run"
            )
        try:
            engine_info = await self.engine.info()
            transfer = await _engine_view.transfer_mode(self.engine, ctx.run_root, policy.image_ref)
        except EngineError as exc:
            ctx.record(status=RunStatus.CRASHED, reason=RunReason.ENGINE_ERROR, error=str(exc), execution="isolated")
            raise
        except PolicyError as exc:
            ctx.record(status=RunStatus.FAILED, reason=RunReason.INVALID_REQUEST, error=str(exc), execution="isolated")
            raise
        except asyncio.CancelledError:
            ctx.record(status=RunStatus.CANCELLED, reason=RunReason.CANCELLED, error="cancelled before its container was created")
            raise
        user = _ownership.resolve_user(policy.user)
        _ownership.prepare(ctx.run_dir, user)
        deadline = time.time() + policy.timeout
        channel = secrets.token_hex(8) if launch.request is not None else None
        request = {**launch.request, "channel": channel} if launch.request is not None else None
        egress = await _egress_proxy.start_for(policy, ctx.run_id) if policy.network == "allowlist" else None
        remote = RemoteRunDir.for_run(self.engine, ctx, user) if transfer == "copy" else None
        try:
            spec = build_spec(ctx, policy, user, launch.command, deadline=deadline, request=request, egress=egress)
            if remote is not None:
                spec = remote.volume_spec(spec)
        except BaseException as exc:
            if egress is not None:
                await egress.close()
            if isinstance(exc, DadSandboxError):  # refused before any container: final at once
                ctx.record(status=RunStatus.FAILED, reason=RunReason.INVALID_REQUEST, error=str(exc), execution="isolated")
            raise
        self._record_start(launch, engine_info, deadline, run_dir_mode=transfer)
        # The create call runs to its end even when we are cancelled meanwhile: the engine may be
        # making the container right now, and only its id lets us remove it.
        create = asyncio.ensure_future(self._create(spec, remote))
        cancelled = await run_to_the_end(create)
        if create.cancelled() or create.exception() is not None:
            error = create.exception() if not create.cancelled() else None
            if cancelled or error is None:
                ctx.record(status=RunStatus.CANCELLED, reason=RunReason.CANCELLED, error="cancelled before its container was created")
            elif isinstance(error, RunSetupError):
                ctx.record(status=RunStatus.FAILED, reason=RunReason.INVALID_REQUEST, error=str(error))
            else:
                ctx.record(status=RunStatus.CRASHED, reason=RunReason.ENGINE_ERROR, error=f"could not create the container: {error}")
            if remote is not None:
                for problem in await remote.cleanup():
                    log.error("copy mode: could not clean up; 'dad-sandbox gc' will", run_id=ctx.run_id, error=problem)
            _ownership.reclaim(ctx.run_dir, user)
            if egress is not None:
                await egress.close()
            if cancelled or error is None:
                raise asyncio.CancelledError
            raise error
        watch = _Watch(create.result(), launch.component, user, deadline, channel, cancelled=cancelled, egress=egress,
                       remote=remote)
        return await self._supervise(watch, spec=spec)

    async def _create(self, spec: ContainerSpec, remote: RemoteRunDir | None) -> str:
        """Create the run's container; in copy mode, fill its volumes from the host first."""
        if remote is not None:
            await remote.copy_in(spec.image)
        return await self.engine.create(spec)

    def _record_start(self, launch: Launch, engine_info: dict[str, Any], deadline: float, **extra: Any) -> None:
        """Save the effective policy beside the run and record what is about to run, and where."""
        ctx, policy = self.ctx, self.policy
        with _safe_fs.opened_dir(ctx.run_dir, TRACE_DIR) as fd:
            _safe_fs.write_atomic(fd, POLICY_FILE, (policy.model_dump_json(indent=2) + "\n").encode(), durable=False)
        identity = _labels.supervisor_identity()
        seccomp = policy.seccomp_profile
        ctx.record(
            execution="isolated",
            image=policy.image_ref,
            runtime=policy.runtime,
            engine={k: engine_info.get(k) for k in ("engine", "version", "api_version", "kernel")},
            policy_name=policy.name,
            policy_hash=policy.hash,
            seccomp_profile=seccomp.name,
            seccomp_hash=seccomp.sha256,  # sha256 of the profile file; None: the engine's own default
            policy=policy.model_dump(mode="json"),
            command=None if launch.component else launch.command,
            component=launch.component,
            supervisor={
                "host": identity[_labels.SUPERVISOR_HOST],
                "pid": int(identity[_labels.SUPERVISOR_PID]),
                "deadline": datetime.fromtimestamp(deadline, UTC).isoformat(),
            },
            **extra,
        )
        log.info("run starting", run_id=ctx.run_id, image=policy.image_ref, policy=policy.name)

    async def run_pooled(self, slot: Slot, launch: Launch) -> RunResult:
        """Dispatch the run to a warm-pool container whose slot dir became this run's dir."""
        ctx = self.ctx
        t0 = time.perf_counter()
        deadline = time.time() + self.policy.timeout
        pointer = pointer_file(ctx.run_root, slot.slot_id)
        pointer.write_text(str(ctx.run_dir))  # .pool is host-only: no container mounts it
        try:
            return await self._dispatch(slot, launch, deadline, t0)
        finally:
            with contextlib.suppress(OSError):
                pointer.unlink()

    async def _dispatch(self, slot: Slot, launch: Launch, deadline: float, t0: float) -> RunResult:
        ctx = self.ctx
        self._record_start(launch, await self.engine.info(), deadline, container_id=slot.container_id,
                           warm_pool_slot=slot.slot_id)
        env = {"DAD_RUN_ID": ctx.run_id}
        channel = secrets.token_hex(8) if launch.request is not None else None
        if launch.request is not None:
            env[REQUEST_ENV] = json.dumps({**launch.request, "channel": channel,
                                           "env_params": container_env_params(ctx, slot.slot_id)})
        watch = _Watch(slot.container_id, launch.component, slot.user, deadline, channel, started=True)
        write = asyncio.ensure_future(
            self.engine.write_stdin(slot.stdin, (json.dumps({
                "argv": launch.command, "env": env, "deadline": deadline + INIT_DEADLINE_GRACE,  # for dad-init
            }) + "\n").encode())
        )
        watch.cancelled = await run_to_the_end(write)  # finalized (container killed) below, then re-raised
        if not write.cancelled() and write.exception() is not None:
            watch.failure = write.exception()
        dispatched = time.perf_counter() - t0
        try:
            self.ctx.record(status=RunStatus.RUNNING, started_at=datetime.now(UTC), dispatch_seconds=round(dispatched, 6))
        except (UnsafePathError, OSError) as exc:
            log.warning("could not write metadata while the run goes", run_id=ctx.run_id, error=str(exc))
        # without a dispatched run the waiter never got its run: finalize as an engine failure
        return await self._supervise(watch, spec=None, already_running=watch.failure is None, slot=slot)

    async def resume(self, state: ContainerState) -> RunResult:
        """Re-attach to a container whose supervisor died: enforce its stored deadline, then finalize.

        Output the container wrote while nobody was attached is not recovered (the engine keeps no
        copy, by design: it would be an unbounded file on the host); what was captured before stays.
        """
        stored = (self.ctx.metadata.supervisor or {}).get("deadline")
        try:
            # the deadline recorded at dispatch (a warm-pool container's label only bounds its idle time)
            deadline = datetime.fromisoformat(stored).timestamp() if stored else float(state.labels[_labels.DEADLINE])
        except (KeyError, ValueError):
            deadline = 0.0
        user = _ownership.resolve_user(self.policy.user)
        watch = _Watch(state.id, self.ctx.metadata.component, user, deadline, started=state.started_at is not None)
        if self.ctx.metadata.run_dir_mode == "copy":
            watch.remote = RemoteRunDir.for_recovery(self.engine, self.ctx.run_id, self.ctx.run_dir)
        if not state.running and state.finished_at is not None and state.finished_at.timestamp() > deadline:
            watch.deadline_hit = True  # nobody was there to kill it; it ran past its deadline all the same
        recovered_by = _labels.supervisor_identity()[_labels.SUPERVISOR]
        self.ctx.record(supervisor={**(self.ctx.metadata.supervisor or {}), "recovered_by": recovered_by})
        log.info("re-attaching to an orphaned run", run_id=self.ctx.run_id, container=state.id[:12], running=state.running)
        return await self._supervise(watch, spec=None, already_running=state.running)

    # ------------------------------------------------------------------ watching

    async def _supervise(
        self, watch: _Watch, *, spec: ContainerSpec | None, already_running: bool = False, slot: Slot | None = None
    ) -> RunResult:
        # Import the outcome repository code (GitPython, ~50 ms) while the engine starts the
        # container, instead of after the run when the caller is waiting for its result.
        if "dad_sandbox.run._outcome" not in sys.modules:
            watch.tasks.append(asyncio.create_task(asyncio.to_thread(importlib.import_module, "dad_sandbox.run._outcome")))
        if slot is not None:  # a warm-pool container: output attached and files open since it was made
            logs_fd, metrics_fd, sink = slot.logs_fd, slot.metrics_fd, slot.sink
            sink.retarget(self.ctx.run_id, self.observer, watch.channel)
            sink.on_line = self.on_line
            watch.pump = slot.pump
        else:
            with _safe_fs.opened_dir(self.ctx.run_dir, TRACE_DIR) as trace_fd:
                logs_fd = _safe_fs.open_append(trace_fd, LOGS_FILE)
                metrics_fd = _safe_fs.open_append(trace_fd, METRICS_FILE)
            sink = OutputSink(logs_fd, limit=self.policy.output_limit, run_id=self.ctx.run_id, metrics_fd=metrics_fd,
                              observer=self.observer, channel=watch.channel, on_line=self.on_line)
        try:
            if watch.cancelled:  # cancelled before the container could start: finalize, then re-raise
                raise asyncio.CancelledError
            await self._watch(watch, sink, metrics_fd, start=spec is not None,
                              running=already_running or spec is not None, attach=slot is None)
        except asyncio.CancelledError:
            watch.cancelled = True
            if not watch.started and watch.pump is not None:
                # A created, never-started container writes nothing, and its output stream ends
                # only when it is removed: do not let the finalizer wait for it.
                watch.pump.cancel()
            raise
        except EngineUnavailable as exc:
            watch.engine_lost = True
            watch.failure = exc
            log.error("lost the engine during the run", run_id=self.ctx.run_id, error=str(exc))
        except BaseException as exc:
            watch.failure = exc
            raise
        finally:
            finalizer = asyncio.ensure_future(self._finalize(watch, sink, logs_fd, metrics_fd))
            cancelled_while_finalizing = False
            while not finalizer.done():
                try:
                    await asyncio.shield(finalizer)
                except asyncio.CancelledError:
                    cancelled_while_finalizing = True  # finish cleaning up first, re-raise after
            if cancelled_while_finalizing and not watch.cancelled:
                raise asyncio.CancelledError
        return finalizer.result()

    async def _watch(
        self, watch: _Watch, sink: OutputSink, metrics_fd: int, *, start: bool, running: bool, attach: bool = True
    ) -> None:
        cid = watch.container_id
        if running and attach:
            await self._attach(watch, sink)
        if start:
            starting = asyncio.ensure_future(self.engine.start(cid))
            cancelled = await run_to_the_end(starting)  # a start in flight completes: we then know its state
            watch.started = not starting.cancelled() and starting.exception() is None
            if cancelled:
                raise asyncio.CancelledError
            starting.result()
            try:
                self.ctx.record(status=RunStatus.RUNNING, started_at=datetime.now(UTC), container_id=cid)
            except (UnsafePathError, OSError) as exc:
                # the run is tampering with its run dir already; the final write happens when it is gone
                log.warning("could not write metadata while the run goes", run_id=self.ctx.run_id, error=str(exc))
        if running:
            watch.tasks.append(asyncio.create_task(self._monitor(watch, metrics_fd)))
            code = await self.engine.wait(cid, timeout=watch.deadline - time.time())
            if code is None:
                watch.deadline_hit = True
                log.warning("deadline passed: killing the container", run_id=self.ctx.run_id, timeout=self.policy.timeout)
                await self.engine.kill(cid)
            elif code == INIT_DEADLINE_EXIT and time.time() >= watch.deadline:
                watch.deadline_hit = True  # dad-init enforced it first (this process was suspended or starved)

    async def _attach(self, watch: _Watch, sink: OutputSink) -> None:
        """Connect the output stream and wait until it is attached, so no early output is lost."""
        def hold(pump: asyncio.Task[Any]) -> None:
            watch.pump = pump

        await attach_output(self.engine, watch.container_id, sink, pump_holder=hold)

    async def _monitor(self, watch: _Watch, metrics_fd: int) -> None:
        """Sample resource use into metrics.jsonl and enforce the run-dir quotas, every interval.

        The run-dir walk runs in a worker thread with its own entry and time budget; when a walk
        is slow (a run with many files), the next one waits up to twice as long (at most 5 s), so
        the supervisor spends at most about a third of a core on any one run.
        """
        interval = self.policy.metrics_interval or 1.0
        quota = self.policy.disk_quota
        # The first sample waits a little: most short runs are over by then, and a stats call
        # racing container start costs the engine (2 cores) more than the sample is worth.
        await asyncio.sleep(min(interval, 0.2))
        # copy mode: the run dir is on the engine's disk until the run ends; it is measured as it comes back
        walk = (quota is not None or self.policy.max_files is not None) and watch.remote is None
        if quota is not None and walk:
            with contextlib.suppress(DadSandboxError):
                watch.pid = (await self.engine.inspect(watch.container_id)).pid
        while True:
            sample = await self.engine.stats(watch.container_id) if self.policy.metrics_interval else None
            if sample is not None:
                peak = sample.get("memory_max_bytes") or sample.get("memory_bytes")
                if peak is not None:
                    watch.peak_memory = max(watch.peak_memory or 0, int(peak))
                if sample.get("cpu_total_ns") is not None:
                    watch.cpu_ns = int(sample["cpu_total_ns"])
                watch.samples += 1
            pause = interval
            if walk:
                t0 = time.monotonic()
                usage = await asyncio.to_thread(self._live_usage, watch)
                # a slow walk (a huge tree) spaces out the next, but never beyond a few seconds:
                # the gap between two walks bounds how far a fast writer can overshoot the quota
                pause = max(interval, min(2 * (time.monotonic() - t0), 5.0))
                watch.run_dir_bytes = usage.bytes
                breach = self._quota_breach(usage)
                if breach is not None:
                    watch.limit_hit, watch.limit_detail = breach
                    log.warning("run dir over its quota: stopping the run", run_id=self.ctx.run_id,
                                bytes=usage.bytes, quota=quota, entries=usage.entries, problem=usage.problem)
                    await self.engine.kill(watch.container_id)
                    return
            if sample is not None or watch.run_dir_bytes is not None:
                record = {"ts": datetime.now(UTC).isoformat(), "run_id": self.ctx.run_id, "source": "supervisor",
                          "name": "container.resources", **(sample or {}), "run_dir_bytes": watch.run_dir_bytes}
                os.write(metrics_fd, (json.dumps(record) + "\n").encode())
            await asyncio.sleep(pause)

    def _usage(self, watch: _Watch) -> DirUsage:
        """Walk the run dir within the policy's file-count budget (blocking: call it in a thread)."""
        limit = self.policy.max_files
        # A run sharing the host user's uid can chmod its folders; the owner repairs them to count.
        repair = watch.user.uid == os.geteuid() and os.geteuid() != 0
        return dir_usage(self.ctx.run_dir, max_entries=(limit if limit is not None else 10_000_000) + 1, repair=repair)

    def _live_usage(self, watch: _Watch) -> DirUsage:
        """The walk, plus what the run's processes hold in files they deleted (blocking)."""
        usage = self._usage(watch)
        held, complete = deleted_open_bytes(watch.pid)
        if not held and complete:
            return usage
        return DirUsage(usage.bytes + held, usage.entries, usage.complete and complete,
                        usage.problem or (None if complete else "too many open files to examine"))

    def _quota_breach(self, usage: DirUsage) -> tuple[RunReason, str] | None:
        """``(reason, detail)`` when the run dir is over a quota or could not be measured (fails closed)."""
        quota, limit = self.policy.disk_quota, self.policy.max_files
        if quota is not None and usage.bytes > quota:
            return RunReason.DISK_QUOTA, f"the run dir went over its disk quota of {quota} bytes ({usage.bytes} bytes)"
        if limit is not None and usage.entries > limit:
            return RunReason.FILE_QUOTA, f"the run dir went over its limit of {limit} files and folders"
        if not usage.complete:
            return RunReason.DISK_QUOTA, f"the run dir could not be measured, so its quota could not be checked: {usage.problem}"
        return None

    # ------------------------------------------------------------------ finalizing

    async def _finalize(self, watch: _Watch, sink: OutputSink, logs_fd: int, metrics_fd: int) -> RunResult:
        ctx, engine, cid = self.ctx, self.engine, watch.container_id
        problems: list[str] = []
        for task in watch.tasks:
            task.cancel()
        if watch.cancelled or (watch.failure is not None and not watch.engine_lost):
            await self._quietly(engine.kill(cid), problems)
        state = await self._final_state(watch, problems)
        await self._drain_output(watch, problems)
        output = sink.finish()
        if sink.internal_errors:
            problems.append(f"{sink.internal_errors} output chunk(s) could not be recorded")
        os.close(logs_fd)
        os.close(metrics_fd)
        copied = await watch.remote.copy_out(cid, self.policy) if watch.remote is not None else None
        # Everything that reads what the run wrote happens in a worker thread with its own budget.
        files = await asyncio.to_thread(self._settle_files, watch, problems)
        if copied is not None:
            self._note_copy_out(copied, files, problems)
        egress = await self._close_egress(watch, problems)
        report = files.collected.report if watch.component else None

        status, reason = classify(state, deadline_hit=watch.deadline_hit, cancelled=watch.cancelled,
                                  limit_hit=watch.limit_hit, engine_lost=watch.engine_lost)
        if watch.component and status == RunStatus.COMPLETED and (report or {}).get("status") != "completed":
            status, reason = RunStatus.FAILED, RunReason.RUNNER_REPORT
        elif status == RunStatus.FAILED and reason == RunReason.EXIT_CODE:
            reason = report_reason(report) or reason
        breach = files.copy_breach or self._quota_breach(files.usage)
        if breach is not None and breach[0] == "engine_error":
            if status in (RunStatus.COMPLETED, RunStatus.FAILED):
                status, reason = RunStatus.CRASHED, RunReason.ENGINE_ERROR
                watch.failure = watch.failure or EngineError(breach[1])
            else:
                problems.append(breach[1])
            breach = None
        if breach is not None and status in (RunStatus.COMPLETED, RunStatus.FAILED) and reason not in ("disk_quota", "file_quota"):
            status, reason = RunStatus.FAILED, breach[0]
            watch.limit_hit, watch.limit_detail = breach
        error = self._error_text(status, reason, state, report, sink, watch, problems)
        resources: dict[str, Any] = {"samples": watch.samples, "run_dir_bytes": files.usage.bytes,
                                     "run_dir_entries": files.usage.entries}
        if watch.peak_memory is not None:
            resources["peak_memory_bytes"] = watch.peak_memory
        if watch.cpu_ns is not None:
            resources["cpu_seconds"] = round(watch.cpu_ns / 1e9, 3)
        if self.policy.memory:
            resources["memory_limit_bytes"] = self.policy.memory
        if state is not None and state.exit_code is not None and state.exit_code > 128:
            resources["exit_signal"] = signal_name(state.exit_code - 128)
        collection = files.collected.files
        details: RecordFields = {
            "reason": reason,
            "container_id": cid,
            "image_id": state.image_id if state else None,
            "exit_code": state.exit_code if state else None,
            "output": output,
            "resources": resources,
            "collection": {name: rep.to_json() for name, rep in collection.items()},
            "tampering": files.tampering + [f"{n}: {r.refused}" for n, r in collection.items() if r.refused],
        }
        if egress is not None:
            details["egress"] = egress
        if root_id := reported_component_id(report):
            details["root_component_id"] = root_id
        if watch.remote is not None:
            details["run_dir_copy"] = watch.remote.report
        try:
            md = await asyncio.to_thread(ctx.record, status=status, error=error, **details)
        except Exception as exc:
            log.error("could not record the run's details; recording its status alone", run_id=ctx.run_id, error=str(exc))
            md = await asyncio.to_thread(ctx.record, status=status, reason=reason, container_id=cid,
                                         error=f"{_hostile.text(error or '')}\n(details could not be recorded: {exc})")
        async def remove() -> None:
            try:
                await engine.remove(cid)
            except DadSandboxError as exc:
                log.error("could not remove the container; 'dad-sandbox gc' will", run_id=ctx.run_id, error=str(exc))
                return
            if watch.remote is not None:
                for problem in await watch.remote.cleanup():
                    log.error("copy mode: could not clean up; 'dad-sandbox gc' will", run_id=ctx.run_id, error=problem)

        # The final status is on disk; committing outcomes and removing the container are independent.
        await asyncio.gather(asyncio.to_thread(self._commit_outcomes), remove())
        md = ctx.metadata
        log.info("run finished", run_id=ctx.run_id, status=md.status.value, reason=md.reason,
                 duration_seconds=md.duration_seconds)
        nodes = [
            {k: n.get(k) for k in ("hierarchy_path", "status", "output", "duration_seconds")}
            for n in (report or {}).get("nodes", [])
        ]
        return RunResult.from_metadata(md, ctx.run_dir, nodes)

    @staticmethod
    def _note_copy_out(copied: Extracted, files: _Files, problems: list[str]) -> None:
        """Copy mode: what the copy-out refused is tampering; a copy cut short decides the status.

        A quota or time budget reached while copying fails the run as a local run over its quota
        does (an incomplete measurement fails closed); a broken transfer is the engine's failure.
        """
        files.tampering.extend(f"copy-out refused {entry}" for entry in copied.refused)
        if copied.refused_count > len(copied.refused):
            files.tampering.append(f"copy-out refused {copied.refused_count - len(copied.refused)} more entries")
        if copied.limit in ("disk_quota", "file_quota"):
            files.copy_breach = (RunReason(copied.limit), copied.problem or copied.limit)
        elif copied.limit == "budget":
            files.copy_breach = (RunReason.DISK_QUOTA, f"the run dir could not be copied back in time, so its quota could not "
                                               f"be checked: {copied.problem}")
        elif copied.limit is not None:
            files.copy_breach = (RunReason.ENGINE_ERROR, copied.problem or "the run dir could not be copied back")

    def _settle_files(self, watch: _Watch, problems: list[str]) -> _Files:
        """The host's whole work on a finished run's files; blocking, bounded, and it never raises.

        Order: measure (repairing permissions a same-uid run took away), make sure ``.trace/`` is
        the host's folder, hand the run dir back to the host user, then collect the runner's files.
        """
        ctx = self.ctx
        files = _Files(tampering=list(ctx.metadata.tampering))
        try:
            files.usage = self._usage(watch)
        except Exception as exc:
            files.usage = DirUsage(0, 0, False, f"the walk failed: {exc}")
        try:
            planted = _safe_fs.ensure_plain_dir(ctx.run_dir, TRACE_DIR)
            if planted:
                files.tampering.append(f"{TRACE_DIR}/ was replaced by the run; the host moved it aside to {planted}")
                log.warning("run dir tampering: .trace moved aside", run_id=ctx.run_id, moved_to=planted)
        except Exception as exc:
            problems.append(f"could not restore {TRACE_DIR}: {exc}")
        try:
            _ownership.reclaim(ctx.run_dir, watch.user)
        except Exception as exc:
            problems.append(f"could not hand the run dir back to uid {watch.user.host_uid}: {exc}")
        try:
            files.collected = collect_runner_files(ctx.run_dir, budget=FILES_BUDGET_SECONDS / 2)
        except Exception as exc:
            log.error("could not collect the runner's files", run_id=ctx.run_id, error=str(exc))
            problems.append(f"could not collect the runner's files: {exc}")
        return files

    async def _close_egress(self, watch: _Watch, problems: list[str]) -> dict[str, Any] | None:
        """Stop the run's egress proxy (the container is stopped) and write its attempts into the trace."""
        if watch.egress is None:
            return None
        summary = await watch.egress.close()
        try:
            await asyncio.to_thread(_egress_proxy.write_trace, self.ctx.run_dir, watch.egress)
        except Exception as exc:
            problems.append(f"could not write the egress records: {exc}")
        return summary

    def _commit_outcomes(self) -> None:
        try:
            self.ctx.commit_outcomes()
        except Exception as exc:
            log.error("could not commit the run's outcomes", run_id=self.ctx.run_id, error=str(exc))

    async def _final_state(self, watch: _Watch, problems: list[str]) -> ContainerState | None:
        """The container's state, read BEFORE removal; after an engine loss, waits for it to return
        (retrying while the engine is unavailable, for at most ENGINE_RETURN_TIMEOUT)."""
        engine, cid = self.engine, watch.container_id

        def engine_gone(_: RetryCallState) -> None:
            if not watch.engine_lost:  # the engine went away as the run ended: wait for it to return
                watch.engine_lost = True
                log.error("lost the engine while finalizing; waiting for it", run_id=self.ctx.run_id)

        try:
            async for attempt in AsyncRetrying(retry=retry_if_exception_type(EngineUnavailable), wait=wait_fixed(0.5),
                                               stop=stop_after_delay(ENGINE_RETURN_TIMEOUT), before_sleep=engine_gone,
                                               reraise=True):
                with attempt:
                    state = await engine.inspect(cid)
                    if state.running:
                        await self._quietly(engine.kill(cid), problems)
                        state = await engine.inspect(cid)
                    return state
        except DadSandboxError as exc:
            problems.append(f"could not read the container state: {exc}")
        return None

    async def _drain_output(self, watch: _Watch, problems: list[str]) -> None:
        if watch.pump is None:
            return
        _, pending = await asyncio.wait([watch.pump], timeout=OUTPUT_DRAIN_TIMEOUT)
        for task in pending:
            task.cancel()
            problems.append("the output stream did not end in time; output may be incomplete")
        for task in [watch.pump, *watch.tasks]:
            if task.done() and not task.cancelled() and task.exception() is not None:
                problems.append(f"output/metrics collection failed: {task.exception()}")

    @staticmethod
    async def _quietly(call: Any, problems: list[str]) -> None:
        try:
            await call
        except DadSandboxError as exc:
            problems.append(str(exc))

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
            if reason == RunReason.NODE_LOST:
                parts.append("the Swarm node running the run left the cluster; how the run ended is unknown "
                             "and its output on that node could not be read")
            elif reason == RunReason.ENGINE_LOST:
                parts.append("the container engine went away during the run" +
                             (f": {watch.failure}" if watch.failure else ""))
            elif watch.failure is not None:
                parts.append(f"the sandbox failed: {watch.failure}")
            elif reason and reason.startswith("signal:"):
                parts.append(f"the run was killed by {reason.removeprefix('signal:')}")
            else:
                parts.append("the container ended without a readable state")
            if state is not None and state.error:
                parts.append(f"engine: {state.error}")
        elif status == RunStatus.FAILED:
            if reason in ("disk_quota", "file_quota"):
                parts.append(
                    watch.limit_detail if watch.limit_hit and watch.limit_detail
                    else f"a file went over the policy's max_file_size of {self.policy.max_file_size} bytes"
                )
            elif report and report.get("error"):
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
