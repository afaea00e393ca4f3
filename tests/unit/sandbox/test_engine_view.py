"""The bind-or-copy probe leaves nothing behind, whenever its caller is cancelled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dad_sandbox.sandbox._engine_view import engine_sees
from dad_sandbox.sandbox.engine import ContainerSpec
from dad_sandbox.testing import FakeEngine


class SlowCreateEngine(FakeEngine):
    """An engine whose create is still in flight when the caller gives up (as dockerd's may be)."""

    def __init__(self) -> None:
        super().__init__(images={"img"})
        self.creating = asyncio.Event()

    async def create(self, spec: ContainerSpec) -> str:
        self.creating.set()

        async def engine_side() -> str:  # like dockerd behind a worker thread: goes on regardless
            await asyncio.sleep(0.2)
            return await FakeEngine.create(self, spec)

        return await asyncio.shield(asyncio.ensure_future(engine_side()))


def test_cancel_during_the_probes_create_leaves_no_container(tmp_path: Path) -> None:
    async def go() -> SlowCreateEngine:
        engine = SlowCreateEngine()
        probe = asyncio.ensure_future(engine_sees(engine, tmp_path / "runs", "img"))
        await engine.creating.wait()
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        await asyncio.sleep(0.4)  # whatever the engine was still doing is done by now
        return engine

    engine = asyncio.run(go())
    assert engine.containers == {}
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(".dad-probe-")]
