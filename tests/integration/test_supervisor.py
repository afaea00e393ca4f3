"""The Supervisor: concurrency, cancellation, recovery after a killed supervisor, gc."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from dad_sandbox import RunStatus, Supervisor
from dad_sandbox.run import read_metadata
from dad_sandbox.sandbox import OrphanAction
from dad_sandbox.sync import SyncSupervisor

from .conftest import labelled, wait_for_status

SUPERVISOR_SCRIPT = """
import sys
from dad_sandbox.sync import exec_command
root = sys.argv[1]
exec_command(sys.argv[3:], timeout=float(sys.argv[2]), project_root=root, run_root=root + "/runs")
"""


def spawn_and_kill(project: Path, timeout: float, argv: list[str]) -> Path:
    """Start a supervisor process for one run, SIGKILL it once the run is running; return the run dir."""
    runs = project / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR_SCRIPT, str(project), str(timeout), *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 30
        new: set[Path] = set()
        while time.monotonic() < end and not new:
            new = (set(runs.iterdir()) if runs.is_dir() else set()) - before
            time.sleep(0.02)
        (run_dir,) = new
        wait_for_status(run_dir, RunStatus.RUNNING)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    return run_dir


def deadline_of(run_dir: Path) -> float:
    return datetime.fromisoformat(read_metadata(run_dir).supervisor["deadline"]).timestamp()


@pytest.mark.slow
def test_killed_supervisor_twenty_times_nothing_leaks(project: Path, docker_api) -> None:
    """Kill the supervisor mid-run 20 times: recovery re-attaches, honours each deadline, leaks nothing."""
    timeout = 20.0
    run_dirs = [spawn_and_kill(project, timeout, ["sleep", "120"]) for _ in range(20)]
    orphaned = {read_metadata(d).run_id for d in run_dirs}
    assert all(labelled(docker_api, rid) for rid in orphaned), "the killed supervisors left their containers"

    async def recover():
        async with Supervisor(project_root=project, recover_on_start=False) as sup:
            start = time.time()
            found = await sup.recover(wait=True)
            return start, found

    recover_start, found = asyncio.run(recover())
    mine = [o for o in found if o.run_id in orphaned]
    # Re-attached while still running, or already ended by dad-init at deadline + 2 s when the 20
    # spawns took longer than that (a loaded machine): either way timed_out and nothing left.
    assert len(mine) == 20 and all(o.action in (OrphanAction.REATTACHED, OrphanAction.FINALIZED) for o in mine)
    for run_dir in run_dirs:
        md = read_metadata(run_dir)
        assert (md.status, md.reason) == ("timed_out", "deadline"), md.error
        done = md.completed_at.timestamp()
        deadline = deadline_of(run_dir)
        assert done >= deadline - 0.5, "killed before its deadline"
        assert done <= max(deadline, recover_start) + 5.0, "its deadline was not enforced"
        assert md.supervisor.get("recovered_by")
    assert all(labelled(docker_api, rid) == set() for rid in orphaned)


def test_orphan_that_exited_is_finalized_from_its_state(project: Path, docker_api) -> None:
    """A run that ended while no supervisor lived is finalized with its real exit status."""
    run_dir = spawn_and_kill(project, 60, ["sh", "-c", "sleep 1; echo finished; exit 5"])
    rid = read_metadata(run_dir).run_id
    end = time.monotonic() + 20
    while time.monotonic() < end and docker_api.inspect_container(next(iter(labelled(docker_api, rid))))["State"]["Running"]:
        time.sleep(0.1)

    async def recover():
        async with Supervisor(project_root=project, recover_on_start=False) as sup:
            return await sup.recover()

    found = [o for o in asyncio.run(recover()) if o.run_id == rid]
    assert found and found[0].action == OrphanAction.FINALIZED
    md = read_metadata(run_dir)
    assert (md.status, md.exit_code) == ("failed", 5)
    assert labelled(docker_api, rid) == set()


def test_gc_dry_run_then_clean(project: Path, docker_api) -> None:
    """gc --dry-run only lists; gc kills a running orphan and marks its run abandoned."""
    run_dir = spawn_and_kill(project, 120, ["sleep", "120"])
    rid = read_metadata(run_dir).run_id

    async def gc(dry: bool):
        async with Supervisor(project_root=project, recover_on_start=False) as sup:
            return [o for o in await sup.gc(dry_run=dry) if o.run_id == rid]

    (listed,) = asyncio.run(gc(True))
    assert listed.action == OrphanAction.WOULD_CLEAN and labelled(docker_api, rid)
    (cleaned,) = asyncio.run(gc(False))
    assert cleaned.action == OrphanAction.ABANDONED
    md = read_metadata(run_dir)
    assert (md.status, md.reason) == ("abandoned", "supervisor_lost")
    assert labelled(docker_api, rid) == set()


def test_live_supervisors_runs_are_not_touched(project: Path, docker_api) -> None:
    """Recovery skips containers whose supervisor is alive (here: this very process)."""
    async def go():
        async with Supervisor(project_root=project, recover_on_start=False) as sup:
            handle = sup.submit(["sleep", "30"])
            await asyncio.to_thread(wait_for_status, handle.run_dir, RunStatus.RUNNING)
            found = [o for o in await sup.recover() if o.run_id == handle.run_id]
            gcd = [o for o in await sup.gc() if o.run_id == handle.run_id]
            handle.cancel()
            assert (await handle.wait()).status == RunStatus.CANCELLED
            return found, gcd, handle

    found, gcd, handle = asyncio.run(go())
    assert found[0].action == OrphanAction.SKIPPED and gcd[0].action == OrphanAction.SKIPPED
    assert read_metadata(handle.run_dir).status == "cancelled"


def test_fifty_concurrent_runs(project: Path, docker_api) -> None:
    """50 runs through one Supervisor: all complete, distinct ids and dirs, no container left."""
    async def go():
        async with Supervisor(project_root=project, max_parallel=16) as sup:
            handles = [sup.submit(["python3", "-c", f"print({i})"]) for i in range(50)]
            return handles, await asyncio.gather(*(h.wait() for h in handles))

    handles, results = asyncio.run(go())
    assert [r.status for r in results] == [RunStatus.COMPLETED] * 50
    assert len({r.run_id for r in results}) == 50 and len({r.run_dir for r in results}) == 50
    assert len({r.metadata.container_id for r in results}) == 50
    assert all(labelled(docker_api, r.run_id) == set() for r in results)


def test_cancel_queued_and_running(project: Path) -> None:
    """Cancelling a running run and one still waiting for a slot both end cancelled."""
    async def go():
        async with Supervisor(project_root=project, max_parallel=1) as sup:
            running = sup.submit(["sleep", "60"])
            queued = sup.submit(["true"])
            await asyncio.to_thread(wait_for_status, running.run_dir, RunStatus.RUNNING)
            queued.cancel()
            running.cancel()
            for h in (running, queued):  # wait() returns the cancelled result; it never raises for the run
                assert (await h.wait()).status == RunStatus.CANCELLED
            return running, queued

    running, queued = asyncio.run(go())
    assert read_metadata(running.run_dir).status == "cancelled"
    md = read_metadata(queued.run_dir)
    assert md.status == "cancelled" and md.container_id is None


def test_sync_supervisor(project: Path) -> None:
    """The blocking facade submits and waits without an event loop in the caller."""
    with SyncSupervisor(project_root=project, max_parallel=4) as sup:
        handles = [sup.submit(["python3", "-c", f"import sys; sys.exit({i % 2})"]) for i in range(6)]
        results = [h.wait(timeout=120) for h in handles]
    assert [r.status.value for r in results] == ["completed", "failed"] * 3
