"""Cancellation at every point of a run's life, on a FakeEngine whose create and start take time:
never a leaked container, never `crashed` for a cancel, never a swallowed CancelledError."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dad_sandbox import (
    IsolatedExecution,
    RunContext,
    RunStatus,
    Supervisor,
    load_policy,
)
from dad_sandbox.run import read_metadata
from dad_sandbox.sandbox.engine import ContainerSpec
from dad_sandbox.testing import FakeEngine

POLICY = load_policy("untrusted").with_overrides(metrics_interval=0.05)


class SlowEngine(FakeEngine):
    """Create and start take 40 ms each, like a busy engine, so a cancel can land inside them."""

    async def create(self, spec: ContainerSpec) -> str:
        await asyncio.sleep(0.04)
        return await super().create(spec)

    async def start(self, container_id: str) -> None:
        await asyncio.sleep(0.04)
        await super().start(container_id)


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.02, 0.05, 0.07, 0.09, 0.12, 0.2])
def test_cancel_at_any_moment_of_isolated_execution(tmp_path: Path, delay: float) -> None:
    """A cancel before, during or after create/start re-raises CancelledError, records cancelled and
    leaves no container."""
    engine = SlowEngine()
    ctx = RunContext("exec", tmp_path)
    ctx.setup_run()

    async def run() -> None:
        async with IsolatedExecution(ctx, POLICY, engine=engine) as execution:
            await execution.run_command(["sleep", "30"])

    async def go() -> None:
        task = asyncio.create_task(run())
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)

    asyncio.run(go())
    md = read_metadata(ctx.run_dir)
    assert (md.status, md.reason) == (RunStatus.CANCELLED, "cancelled"), md.error
    assert engine.containers == {}


def test_wait_returns_cancelled_results_and_the_others_go_on(tmp_path: Path) -> None:
    """The README loop `[await h.wait() for h in handles]` survives one cancelled run: the others complete."""
    engine = SlowEngine()

    async def go():
        async with Supervisor(engine=engine, policy=POLICY, project_root=tmp_path, max_parallel=3) as sup:
            handles = [sup.submit(["sleep", "0.2"]) for _ in range(5)]
            handles[2].cancel()
            return [await h.wait() for h in handles]

    results = asyncio.run(go())
    assert [r.status for r in results] == [RunStatus.COMPLETED] * 2 + [RunStatus.CANCELLED] + [RunStatus.COMPLETED] * 2
    assert engine.containers == {}


def test_waiter_cancelled_is_not_the_run_cancelled(tmp_path: Path) -> None:
    """Cancelling the task that waits raises CancelledError there, and the run goes on to complete."""
    engine = SlowEngine()

    async def go():
        async with Supervisor(engine=engine, policy=POLICY, project_root=tmp_path) as sup:
            handle = sup.submit(["sleep", "0.2"])
            waiter = asyncio.create_task(handle.wait())
            await asyncio.sleep(0.01)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            return await handle.wait()

    assert asyncio.run(go()).status == RunStatus.COMPLETED


def test_preflight_failure_of_a_submitted_run_is_failed(tmp_path: Path) -> None:
    """A run whose engine is gone before its container exists ends crashed or failed, never initialized."""
    engine = FakeEngine()

    async def go():
        async with Supervisor(engine=engine, policy=POLICY, project_root=tmp_path, recover_on_start=False) as sup:
            engine.available = False
            handle = sup.submit(["print", "x"])
            with pytest.raises(Exception, match="switched off"):
                await handle.wait()
            return handle

    handle = asyncio.run(go())
    assert read_metadata(handle.run_dir).status in (RunStatus.FAILED, RunStatus.CRASHED)
