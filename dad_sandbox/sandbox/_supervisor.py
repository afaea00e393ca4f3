"""``Supervisor``: many runs at once, bounded, plus recovery of runs whose supervisor died.

    async with Supervisor(max_parallel=8, run_root="runs") as sup:     # recovers orphans on entry
        handle = sup.submit(["python3", "-c", "print(1)"])
        result = await handle.wait()

Ownership is read from container labels only (``dad.run_id``, ``dad.supervisor.*``), never from
names. A container whose supervisor process is gone (same host, pid dead or recycled) is an
orphan: a still-running one is re-attached and its stored deadline enforced; an exited one is read
and finalized; one that cannot be tied to a readable run is ``abandoned`` and removed.
"""

from __future__ import annotations

import asyncio
import enum
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dad_sandbox._logging import get_logger
from dad_sandbox.errors import DadSandboxError, ExecutionStateError
from dad_sandbox.run import RunContext, RunReason, RunStatus
from dad_sandbox.sandbox import _labels
from dad_sandbox.sandbox._container_run import ContainerRun
from dad_sandbox.sandbox._events import MAX_BYTES, EventFeed, RunEvent
from dad_sandbox.sandbox._isolated import IsolatedExecution
from dad_sandbox.sandbox._policy import Policy, load_policy
from dad_sandbox.sandbox._pool import POOL_LABEL, Slot, WarmPool, pointer_file
from dad_sandbox.sandbox._remote_rundir import sweep_leftovers
from dad_sandbox.sandbox._result import RunResult
from dad_sandbox.sandbox.engine import ContainerState, Engine

log = get_logger(__name__)


class OrphanAction(enum.StrEnum):
    """What recovery or gc did with a container."""

    REATTACHED = "reattached"
    FINALIZED = "finalized"
    ABANDONED = "abandoned"
    REMOVED = "removed"  # its run was already final: only the container was left
    SKIPPED = "skipped"  # owned by a live supervisor or another host
    WOULD_CLEAN = "would_clean"  # gc --dry-run


@dataclass(frozen=True, slots=True)
class Orphan:
    """One container found by label, what became of it, and the run's final status if known."""

    container_id: str
    run_id: str
    run_dir: str | None
    state: str
    owner: str
    action: OrphanAction
    status: str | None = None
    detail: str | None = None


class RunHandle:
    """A submitted run: its id at once, its status as it goes, its result when done."""

    def __init__(self, ctx: RunContext, task: asyncio.Task[RunResult], feed: EventFeed | None = None) -> None:
        self.context = ctx
        self.run_id = ctx.run_id
        self.run_dir = ctx.run_dir
        self._task = task
        self._feed = feed
        task.add_done_callback(self._settle)
        if feed is not None:  # after _settle (callbacks run in order): the status is final by then
            task.add_done_callback(lambda _: feed.close(ctx.metadata.status.value))

    def events(self) -> AsyncIterator[RunEvent]:
        """Output lines, runner records and, last, the status, as they come (bounded: see ``_events``)."""
        if self._feed is None:
            raise ExecutionStateError("this handle has no live events (it was not made by Supervisor.submit)")
        return self._feed.stream()

    def _settle(self, task: asyncio.Task[RunResult]) -> None:
        """Give a run that ended without reaching its supervisor's finalizer its terminal status.

        A task cancelled before its first step never ran ``Supervisor._run``; a pre-flight failure
        (bad policy, no engine) raised before any container. Neither may stay ``initialized``.
        """
        if self.context.metadata.status.is_terminal:
            return
        try:
            if task.cancelled():
                self.context.record(status=RunStatus.CANCELLED, reason=RunReason.CANCELLED, error="cancelled before it started")
            elif task.exception() is not None:
                self.context.record(status=RunStatus.FAILED, reason=RunReason.PREFLIGHT,
                                    error=f"the run could not start: {task.exception()}")
        except (DadSandboxError, OSError) as exc:
            log.error("could not record how the run ended", run_id=self.run_id, error=str(exc))

    @property
    def status(self) -> RunStatus:
        return self.context.metadata.status

    def done(self) -> bool:
        return self._task.done()

    async def wait(self) -> RunResult:
        """The run's result, also for a failed or cancelled run (see ``RunResult.raise_for_status``).

        Raises ``CancelledError`` only when the waiting task itself is cancelled (the run goes on),
        and the pre-flight error when the run could not start at all (its status is then ``failed``).
        """
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self._task.cancelled() or (current is not None and current.cancelling()):
                raise  # the waiter is being cancelled, not (only) the run
            return RunResult.from_metadata(self.context.metadata, self.run_dir)

    def cancel(self) -> None:
        """Stop the run: its container is killed and removed, its status becomes ``cancelled``."""
        self._task.cancel()


class Supervisor:
    """Runs many runs with at most ``max_parallel`` containers at once, and recovers orphans.

    Args:
        engine: the container engine (local Docker by default).
        max_parallel: containers running at the same time; more submissions wait their turn.
        policy: default policy of submitted runs.
        project_root: default project root (mounted read-only).
        run_root: where run dirs go (default ``<project_root>/runs``).
        recover_on_start: run :meth:`recover` when entering ``async with``.
        warm_pool: ``{policy_name: size}``: keep that many containers of each policy created and
            started ahead. Each serves exactly one run; runs of that policy take one when ready
            (cold start otherwise). Re-runs always start cold (they mount the previous run).
    """

    def __init__(
        self,
        *,
        engine: Engine | None = None,
        max_parallel: int = 4,
        policy: str | Path | Policy = "untrusted",
        project_root: Path | str = ".",
        run_root: Path | str | None = None,
        recover_on_start: bool = True,
        warm_pool: dict[str, int] | None = None,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self._engine = engine
        self.max_parallel = max_parallel
        self.policy = load_policy(policy)
        self.project_root = Path(project_root).resolve()
        self.run_root = Path(run_root).resolve() if run_root is not None else self.project_root / "runs"
        self.recover_on_start = recover_on_start
        self._slots: asyncio.Semaphore | None = None
        self._handles: list[RunHandle] = []
        self._recovering: list[asyncio.Task[Any]] = []
        self._open = False
        self._pool_sizes = dict(warm_pool or {})
        self._pools: dict[str, WarmPool] = {}

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from dad_sandbox.sandbox.engine._select import default_engine

            self._engine = default_engine()
        return self._engine

    async def __aenter__(self) -> Supervisor:
        if self._open:
            raise ExecutionStateError("this Supervisor is already open")
        await self.engine.info()
        self._slots = asyncio.Semaphore(self.max_parallel)
        self._open = True
        if self.recover_on_start:
            await self.recover(wait=False)
        for name, size in self._pool_sizes.items():
            policy = load_policy(name)
            pool = WarmPool(policy, size, self.engine, project_root=self.project_root, run_root=self.run_root)
            self._pools[policy.hash] = pool
            pool.start()
        return self

    async def pool_ready(self, timeout: float = 120.0) -> None:
        """Wait until every warm pool is full."""
        await asyncio.gather(*(p.wait_ready(timeout) for p in self._pools.values()))

    async def __aexit__(self, *exc: object) -> None:
        """Wait for every submitted run; on an exception or cancellation, cancel them first."""
        if exc[0] is not None:
            for handle in self._handles:
                handle.cancel()
        pending = [h._task for h in self._handles] + self._recovering
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in self._pools.values()), return_exceptions=True)
        self._pools.clear()
        self._open = False

    def cancel_all(self) -> int:
        """Cancel every run not finished yet (``async with`` then waits for their clean-up); return how many."""
        pending = [h for h in self._handles if not h.done()]
        for handle in pending:
            handle.cancel()
        return len(pending)

    # ------------------------------------------------------------------ submitting

    def submit(
        self,
        argv: Sequence[str] | None = None,
        *,
        component: str | None = None,
        policy: str | Path | Policy | None = None,
        timeout: float | None = None,
        run_id_prefix: str | None = None,
        static_inputs: dict[str, Any] | None = None,
    ) -> RunHandle:
        """Queue a command (``argv``) or a component (``"module:attribute"``) as a new run.

        A component is named, never imported here: the container imports it, checks the static
        inputs against its nodes before any node runs, and reports its id.

        The run is set up at once (its id and directory exist when this returns); it starts when a
        slot is free.
        """
        if not self._open or self._slots is None:
            raise ExecutionStateError("use the Supervisor inside `async with Supervisor(...) as sup:`")
        if (argv is None) == (component is None):
            raise ValueError("submit() takes either argv or component, not both")
        from dad_sandbox.runner import provisional_root_id

        run_policy = load_policy(policy) if policy is not None else self.policy
        # never imported here: the container imports the component and reports its real id
        root_id = provisional_root_id(component) if component else "exec"
        ctx = RunContext(root_id, self.project_root, run_root=self.run_root)
        pool = self._pools.get(run_policy.hash) if timeout is None else None
        slot = pool.take() if pool is not None else None
        try:
            ctx.setup_run(run_id_prefix=run_id_prefix, adopt_dir=slot.slot_dir if slot else None)
        except BaseException:
            if slot is not None and pool is not None:
                asyncio.get_running_loop().create_task(pool._discard(slot))
            raise
        for key, value in (static_inputs or {}).items():
            ctx.register_node_static_input(key, value)
        feed = EventFeed(asyncio.get_running_loop(), max_bytes=min(run_policy.output_limit, MAX_BYTES))
        task = asyncio.create_task(self._run(ctx, list(argv) if argv else None, component, run_policy, timeout, slot, feed))
        handle = RunHandle(ctx, task, feed)
        self._handles.append(handle)
        return handle

    async def _run(
        self, ctx: RunContext, argv: list[str] | None, component: str | None, policy: Policy, timeout: float | None,
        slot: Slot | None = None, feed: EventFeed | None = None,
    ) -> RunResult:
        assert self._slots is not None
        try:
            async with self._slots:
                async with IsolatedExecution(ctx, policy, engine=self.engine, timeout=timeout, slot=slot,
                                             on_event=feed.record if feed else None,
                                             on_line=feed.output if feed else None) as execution:
                    if component is not None:
                        return await execution.run_component(component)
                    assert argv is not None
                    return await execution.run_command(argv)
        except asyncio.CancelledError:
            if ctx.metadata.status == RunStatus.INITIALIZED:  # cancelled while waiting for a slot
                ctx.record(status=RunStatus.CANCELLED, reason=RunReason.CANCELLED, error="cancelled before it started")
                if slot is not None:
                    await self._discard_slot(policy, slot)
            raise

    async def _discard_slot(self, policy: Policy, slot: Slot) -> None:
        pool = self._pools.get(policy.hash)
        if pool is not None:
            await pool._discard(slot)

    # ------------------------------------------------------------------ recovery

    def _mine(self, state: ContainerState) -> bool:
        """Whether a container's run dir lies under this Supervisor's run root."""
        run_dir = state.labels.get(_labels.RUN_DIR, "")
        return run_dir.startswith(str(self.run_root).rstrip("/") + "/")

    async def _sweep(self, everywhere: bool) -> tuple[list[ContainerState], list[Orphan], list[ContainerState]]:
        """The one walk ``recover`` and ``gc`` share: every dad-sandbox container in scope, those whose
        owner may be alive (described as skipped: never touched), and those whose owner is gone."""
        states = [s for s in await self.engine.list_by_label(_labels.RUN_ID) if everywhere or self._mine(s)]
        skipped, orphaned = [], []
        for state in states:
            if _labels.owner_alive(state.labels) is False:
                orphaned.append(state)
            else:
                skipped.append(self._describe(state, OrphanAction.SKIPPED, detail="owner alive or on another host"))
        return states, skipped, orphaned

    async def recover(self, *, wait: bool = True, everywhere: bool = False) -> list[Orphan]:
        """Finalize or re-attach every run under this run root whose supervisor is gone.

        Containers are found by label; run dirs that never got a container (their supervisor died
        before, or a pre-flight step failed) are found by scanning the run root and end
        ``abandoned``. With ``wait=False`` re-attached runs go on in the background (``async with``
        waits for them on exit); with ``wait=True`` this returns when every recovered run is final.
        ``everywhere``: also containers of other run roots on this engine (``dad-sandbox gc`` does).
        """
        states, found, started = await self._sweep(everywhere)
        tasks = [asyncio.create_task(self._recover_one(state, kill=False)) for state in started]
        if tasks:
            log.info("recovering orphaned runs", count=len(tasks))
        found.extend(await self._abandon_containerless(states, dry_run=False))
        if wait:
            found.extend(await asyncio.gather(*tasks))
            found.extend(await self._sweep_copy_leftovers(everywhere, dry_run=False))
        else:
            self._recovering.extend(tasks)
            found.extend(
                self._describe(s, OrphanAction.REATTACHED if s.running else OrphanAction.FINALIZED) for s in started
            )
        return found

    async def gc(self, *, dry_run: bool = False, everywhere: bool = False) -> list[Orphan]:
        """Clean up every run under this run root whose supervisor is gone, without waiting for deadlines.

        Running orphans are killed and their runs end ``abandoned``; exited ones are finalized
        from their real state; run dirs that never got a container end ``abandoned``. ``dry_run``
        only lists what would be done; ``everywhere`` also takes containers of other run roots.
        """
        states, out, orphaned = await self._sweep(everywhere)
        for state in orphaned:
            out.append(self._describe(state, OrphanAction.WOULD_CLEAN) if dry_run
                       else await self._recover_one(state, kill=True))
        out.extend(await self._abandon_containerless(states, dry_run=dry_run))
        out.extend(await self._sweep_copy_leftovers(everywhere, dry_run=dry_run))
        return out

    async def _sweep_copy_leftovers(self, everywhere: bool, *, dry_run: bool) -> list[Orphan]:
        """Copy mode: probe and loader containers and run volumes a dead supervisor left (see ``_remote_rundir``)."""
        try:
            left = await sweep_leftovers(self.engine, under=None if everywhere else str(self.run_root), dry_run=dry_run)
        except DadSandboxError as exc:
            log.error("could not look for copy-mode leftovers", error=str(exc))
            return []
        return [
            Orphan(container_id=item.name if item.kind != "volume" else "", run_id=item.run_id, run_dir=item.run_dir,
                   state=item.kind, owner=item.owner,
                   action=OrphanAction.WOULD_CLEAN if dry_run else (OrphanAction.REMOVED if item.removed else OrphanAction.SKIPPED),
                   detail=f"copy-mode {item.kind} {item.name}" + (f": {item.problem}" if item.problem else ""))
            for item in left
        ]

    async def _abandon_containerless(self, containers: list[ContainerState], *, dry_run: bool) -> list[Orphan]:
        """Scan the run root for runs that are not final, have no container and no living owner."""
        from dad_sandbox.sandbox._orphan_dirs import abandon_containerless

        known_runs = {s.labels.get(_labels.RUN_ID, "") for s in containers}
        known_ids = {s.id for s in containers}  # a warm-pool run is tied to its container by metadata only
        found = await asyncio.to_thread(abandon_containerless, self.run_root, known_runs, known_ids, dry_run=dry_run)
        return [
            Orphan(container_id="", run_id=f.run_id, run_dir=str(f.run_dir), state=f.state, owner=f.owner,
                   action=OrphanAction.WOULD_CLEAN if dry_run else OrphanAction.ABANDONED,
                   status=None if dry_run else RunStatus.ABANDONED.value, detail=f.detail)
            for f in found
        ]

    @staticmethod
    def _describe(state: ContainerState, action: OrphanAction, *, status: str | None = None,
                  detail: str | None = None) -> Orphan:
        return Orphan(
            container_id=state.id,
            run_id=state.labels.get(_labels.RUN_ID, "?"),
            run_dir=state.labels.get(_labels.RUN_DIR),
            state=state.status,
            owner=state.labels.get(_labels.SUPERVISOR, "?"),
            action=action,
            status=status,
            detail=detail,
        )

    async def _recover_one(self, state: ContainerState, *, kill: bool) -> Orphan:
        """Decide and do what an orphan needs; never raises for one bad container."""
        try:
            return await self._recover_or_abandon(state, kill=kill)
        except Exception as exc:
            log.error("could not recover a container", container=state.id[:12], error=str(exc))
            return self._describe(state, OrphanAction.SKIPPED, detail=f"recovery failed: {exc}")

    async def _recover_or_abandon(self, state: ContainerState, *, kill: bool) -> Orphan:
        run_dir = state.labels.get(_labels.RUN_DIR)
        slot_id = state.labels.get(POOL_LABEL)
        if slot_id and run_dir:
            pointer = pointer_file(Path(run_dir).parent.parent, slot_id)
            if not pointer.is_file():  # an idle warm-pool container: no run to finalize
                await self.engine.remove(state.id)
                shutil.rmtree(run_dir, ignore_errors=True)
                return self._describe(state, OrphanAction.REMOVED, detail="idle warm-pool container")
            run_dir = pointer.read_text().strip()
            pointer.unlink(missing_ok=True)
        try:
            ctx = RunContext.open_existing(run_dir) if run_dir else None
        except (DadSandboxError, OSError) as exc:
            await self.engine.remove(state.id)
            return self._describe(state, OrphanAction.ABANDONED, detail=f"run dir unreadable, container removed: {exc}")
        if ctx is None:
            await self.engine.remove(state.id)
            return self._describe(state, OrphanAction.ABANDONED, detail="no run dir label; container removed")
        md = ctx.metadata
        if md.status.is_terminal:
            await self.engine.remove(state.id)
            return self._describe(state, OrphanAction.REMOVED, status=md.status.value)
        try:
            policy = Policy.model_validate(md.policy) if md.policy else None
        except ValidationError:
            policy = None
        if policy is None or state.status == "created" or (kill and state.running):
            if state.running:
                await self.engine.kill(state.id)
            why = "killed by gc: its supervisor is gone" if kill else "never started before its supervisor died"
            ctx.record(status=RunStatus.ABANDONED, reason=RunReason.SUPERVISOR_LOST, error=why)
            await self.engine.remove(state.id)
            return self._describe(state, OrphanAction.ABANDONED, status=RunStatus.ABANDONED.value, detail=why)
        action = OrphanAction.REATTACHED if state.running else OrphanAction.FINALIZED
        result = await ContainerRun(ctx, policy, self.engine).resume(state)
        return self._describe(state, action, status=result.status.value, detail=result.reason)
