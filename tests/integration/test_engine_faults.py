"""Engine faults: the engine restarts mid-run; nothing hangs and the supervisor keeps serving."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from dad_sandbox import RunStatus, Supervisor

from .conftest import wait_for_status

REPO = Path(__file__).resolve().parents[2]
PIDFILE = Path("/run/dad-sandbox-dockerd.pid")


def our_dockerd_pid() -> int | None:
    """The dockerd pid if scripts/engine.sh started the running engine, else None."""
    try:
        pid = int(PIDFILE.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "dockerd" else None


@pytest.mark.slow
def test_engine_restart_mid_run(project: Path) -> None:
    """Restarting dockerd mid-run ends the run crashed/engine_lost, and the next run works."""
    pid = our_dockerd_pid()
    if pid is None:
        pytest.skip("the engine was not started by scripts/engine.sh: this test never restarts someone else's engine")

    def restart_engine() -> None:
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + 60
        while time.monotonic() < end and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        subprocess.run(["bash", str(REPO / "scripts" / "engine.sh")], check=True, timeout=120)

    async def go():
        async with Supervisor(project_root=project, recover_on_start=False) as sup:
            handle = sup.submit(["sleep", "120"], timeout=300)
            await asyncio.to_thread(wait_for_status, handle.run_dir, RunStatus.RUNNING)
            await asyncio.to_thread(restart_engine)
            result = await asyncio.wait_for(handle.wait(), timeout=120)
            after = await asyncio.wait_for(sup.submit(["true"]).wait(), timeout=120)
            return result, after

    result, after = asyncio.run(go())
    assert (result.status, result.reason) == (RunStatus.CRASHED, "engine_lost"), result.error
    assert "engine went away" in result.error
    assert after.status == RunStatus.COMPLETED


def test_a_start_failure_is_crashed_never_completed(project: Path) -> None:
    """A container Docker created but could not start (its bind source vanished) ends crashed (engine_error)."""
    from dad_sandbox import IsolatedExecution, RunContext, load_policy
    from dad_sandbox.run import read_metadata
    from dad_sandbox.sandbox.engine._docker import DockerEngine

    class VanishingMountEngine(DockerEngine):  # the real engine; only the filesystem changes under it
        async def create(self, spec):
            cid = await super().create(spec)
            os.rename(ctx.run_dir / "static_inputs", ctx.run_dir / "static_inputs.gone")
            return cid

    ctx = RunContext("exec", project, run_root=project.parent / "runs")
    ctx.setup_run()

    async def go():
        async with IsolatedExecution(ctx, load_policy("untrusted"), engine=VanishingMountEngine()) as execution:
            return await execution.run_command(["true"])

    from dad_sandbox.errors import EngineError

    with pytest.raises(EngineError, match="bind source path does not exist"):  # as for a refused create
        asyncio.run(go())
    md = read_metadata(ctx.run_dir)
    assert (md.status, md.reason) == (RunStatus.CRASHED, "engine_error"), md.error
    assert "bind source path does not exist" in (md.error or "")
