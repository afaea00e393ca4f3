"""Finalizing waits (with tenacity) for an engine that went away as the run ended, for a bounded time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dad_sandbox import IsolatedExecution, RunContext, load_policy
from dad_sandbox.errors import EngineUnavailable
from dad_sandbox.run import read_metadata
from dad_sandbox.sandbox import _container_run
from dad_sandbox.sandbox.engine import ContainerState
from dad_sandbox.testing import FakeEngine


class FlakyInspect(FakeEngine):
    """The engine is unavailable for the first ``outages`` inspections of an exited container."""

    def __init__(self, outages: int) -> None:
        super().__init__()
        self.outages = outages
        self.inspections = 0

    async def inspect(self, container_id: str) -> ContainerState:
        state = await super().inspect(container_id)
        if state.status == "exited" and self.outages > 0:
            self.outages -= 1
            self.inspections += 1
            raise EngineUnavailable("inspect: the fake engine blinked")
        return state


def _run(tmp_path: Path, engine: FakeEngine):
    ctx = RunContext("exec", tmp_path)
    ctx.setup_run()

    async def go():
        async with IsolatedExecution(ctx, load_policy("untrusted"), engine=engine) as execution:
            return await execution.run_command(["exit", "3"])

    return ctx, asyncio.run(go())


def test_engine_back_within_the_wait(tmp_path: Path) -> None:
    """Two failed inspections, then the engine answers: the state is read, the container removed, the run lost-engine."""
    engine = FlakyInspect(outages=2)
    ctx, result = _run(tmp_path, engine)
    assert engine.inspections == 2 and engine.containers == {}
    assert (result.status.value, result.reason) == ("crashed", "engine_lost")
    assert read_metadata(ctx.run_dir).exit_code == 3


def test_engine_never_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine that stays away: after ENGINE_RETURN_TIMEOUT the run ends crashed, engine_lost, with the reason in its error."""
    monkeypatch.setattr(_container_run, "ENGINE_RETURN_TIMEOUT", 1.0)
    engine = FlakyInspect(outages=10_000)
    ctx, result = _run(tmp_path, engine)
    assert (result.status.value, result.reason) == ("crashed", "engine_lost")
    assert 1 < engine.inspections < 10
    assert "could not read the container state" in (read_metadata(ctx.run_dir).error or "")
