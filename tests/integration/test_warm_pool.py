"""The warm pool: fresh containers ahead of time, each used for exactly one run, nothing leaked."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from dad_sandbox import RunStatus, Supervisor
from dad_sandbox.run import read_metadata
from dad_sandbox.sandbox import OrphanAction

from .conftest import container_exists, labelled, wait_for_status


def test_pooled_runs_use_each_container_once(project: Path, docker_api) -> None:
    """Pooled runs complete in runs/<run_id>, each on its own container, all removed afterwards."""
    async def go():
        async with Supervisor(project_root=project, warm_pool={"untrusted": 2}, recover_on_start=False) as sup:
            await sup.pool_ready()
            results = []
            for i in range(4):
                results.append(await sup.submit(["sh", "-c", f"echo run {i}; pwd; id -u"]).wait())
                await sup.pool_ready()
            comp = await sup.submit(component="sbx_components.flows:counted_agent").wait()
            return results, comp

    results, comp = asyncio.run(go())
    assert all(r.status == RunStatus.COMPLETED for r in [*results, comp]), [r.error for r in results]
    slots = [r.metadata.warm_pool_slot for r in [*results, comp]]
    assert all(slots) and len(set(slots)) == 5
    assert len({r.metadata.container_id for r in results}) == 4
    for r in results:
        assert r.run_dir == project / "runs" / r.run_id and r.run_dir.is_dir()
        assert (read_metadata(r.run_dir).dispatch_seconds or 0) < 1
    assert [n["status"] for n in comp.nodes] == ["completed"] * 3
    assert (comp.run_dir / "executed.log").read_text().split() == ["counted.main.a", "counted.main.b", "counted.main.c"]
    assert not any((project / "runs" / ".pool").iterdir())
    assert not any(container_exists(docker_api, r.metadata.container_id) for r in [*results, comp])


def test_pooled_run_deadline_and_failure(project: Path) -> None:
    """A pooled run keeps the deadline and exit-code semantics of a cold run."""
    async def go():
        async with Supervisor(project_root=project, warm_pool={"untrusted": 1}, recover_on_start=False) as sup:
            await sup.pool_ready()
            failed = await sup.submit(["sh", "-c", "exit 4"]).wait()
            await sup.pool_ready()
            missing = await sup.submit(["no-such-program"]).wait()
            return failed, missing

    failed, missing = asyncio.run(go())
    assert (failed.status, failed.exit_code) == (RunStatus.FAILED, 4)
    assert missing.status == RunStatus.FAILED and "no-such-program" in missing.error


def test_pooled_run_cancel(project: Path, docker_api) -> None:
    """Cancelling a pooled run kills and removes its container."""
    async def go():
        async with Supervisor(project_root=project, warm_pool={"untrusted": 1}, recover_on_start=False) as sup:
            await sup.pool_ready()
            handle = sup.submit(["sleep", "60"])
            await asyncio.to_thread(wait_for_status, handle.run_dir, RunStatus.RUNNING)
            handle.cancel()
            try:
                await handle.wait()
            except asyncio.CancelledError:
                pass
            return handle

    handle = asyncio.run(go())
    md = read_metadata(handle.run_dir)
    assert md.status == "cancelled" and md.container_id and not container_exists(docker_api, md.container_id)


SCRIPT = """
import asyncio, sys
from dad_sandbox import Supervisor
async def main():
    async with Supervisor(project_root=sys.argv[1], warm_pool={"untrusted": 2}, recover_on_start=False) as sup:
        await sup.pool_ready()
        handle = sup.submit(["sleep", "60"], )
        print(handle.run_id, flush=True)
        await asyncio.sleep(600)
asyncio.run(main())
"""


def test_recovery_of_pool_containers(project: Path, docker_api) -> None:
    """After a supervisor with a warm pool is killed, recovery removes idle pool containers and
    re-attaches the dispatched run."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(project)], stdout=subprocess.PIPE, text=True)
    try:
        run_id = proc.stdout.readline().strip()
        wait_for_status(project / "runs" / run_id, RunStatus.RUNNING)
        # Wait for the containers themselves, not the slot folders: a refill makes its folder before
        # its container, and counting folders raced with the container create.
        end = time.monotonic() + 60
        while time.monotonic() < end and len(labelled(docker_api, under=project)) < 3:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_dir = project / "runs" / run_id
    before = labelled(docker_api, under=project)  # only this test's containers: the engine may be shared
    assert len(before) >= 3  # the dispatched run and at least two idle slots

    async def recover():
        async with Supervisor(project_root=project, recover_on_start=False) as sup:
            # shorten the wait: the orphaned run's deadline is minutes away, so gc instead of recover
            return await sup.gc()

    found = asyncio.run(recover())
    actions = {o.run_id: o.action for o in found}
    assert sum(1 for a in actions.values() if a == OrphanAction.REMOVED) >= 2
    assert any(a == OrphanAction.ABANDONED for a in actions.values())
    assert read_metadata(run_dir).status == "abandoned"
    assert labelled(docker_api, under=project) == set()
    assert not list((project / "runs" / ".pool").glob("pool_*"))
