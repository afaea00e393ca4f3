"""One terminal status per run dir across processes: the metadata lock and first-writer-wins."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from dad_sandbox.errors import RunError
from dad_sandbox.run import RunContext, RunStatus, read_metadata
from dad_sandbox.run._metadata import LOCK_FILE, status_lock

WRITERS = (RunStatus.COMPLETED, RunStatus.ABANDONED, RunStatus.CRASHED, RunStatus.CANCELLED)


def _race(run_dir: str, status: str, start: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:
    """One racing process: open the run like recovery or gc would, then try to end it."""
    ctx = RunContext.open_existing(run_dir)
    ctx.record(status=RunStatus.RUNNING)
    start.wait()
    md = ctx.record(status=RunStatus(status), reason=f"by_{status}", exit_code=len(status), error=f"{status} tried")
    out.put((status, md.status.value, md.reason))


def _new_run(root: Path) -> RunContext:
    ctx = RunContext("agent", root, run_root=root / "runs")
    ctx.setup_run()
    return ctx


def test_racing_processes_leave_exactly_one_terminal_status(tmp_path: Path) -> None:
    """Four processes end the same run at once, 15 times: each run keeps one status, and every
    writer reports that same status and its reason back."""
    mp = multiprocessing.get_context("fork")
    for _ in range(15):
        ctx = _new_run(tmp_path)
        start, out = mp.Barrier(len(WRITERS)), mp.Queue()
        procs = [mp.Process(target=_race, args=(str(ctx.run_dir), s.value, start, out)) for s in WRITERS]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        seen = [out.get(timeout=5) for _ in WRITERS]
        md = read_metadata(ctx.run_dir)
        assert md.status.is_terminal
        assert {(status, reason) for _, status, reason in seen} == {(md.status.value, md.reason)}
        winners = [tried for tried, status, _ in seen if tried == status]
        assert winners == [md.status.value] and md.reason == f"by_{md.status.value}"
        assert md.exit_code == len(md.status.value)  # the losers' exit codes never overwrote the winner's
        for tried in WRITERS:  # every writer's error text is kept
            assert f"{tried.value} tried" in (md.error or "")


def test_a_later_writer_in_another_process_cannot_turn_abandoned_into_crashed(tmp_path: Path) -> None:
    """A supervisor that still holds a `running` copy does not overwrite what gc wrote meanwhile."""
    ctx = _new_run(tmp_path)
    ctx.record(status=RunStatus.RUNNING)
    gc = RunContext.open_existing(ctx.run_dir)
    gc.record(status=RunStatus.ABANDONED, reason="supervisor_lost", error="killed by gc")
    md = ctx.record(status=RunStatus.CRASHED, reason="engine_error", error="late supervisor", container_id="abc")
    assert (md.status, md.reason) == (RunStatus.ABANDONED, "supervisor_lost")
    assert md.container_id == "abc"  # fields still empty are filled in
    assert "late supervisor" in md.error and "killed by gc" in md.error
    assert read_metadata(ctx.run_dir).status == RunStatus.ABANDONED


def test_lock_is_private_and_waits_are_bounded(tmp_path: Path) -> None:
    """The lock file is 0600, and a lock held elsewhere makes a writer fail clearly instead of hanging."""
    ctx = _new_run(tmp_path)
    ctx.record(status=RunStatus.RUNNING)
    lock_path = ctx.run_dir / ".trace" / LOCK_FILE
    assert oct(os.stat(lock_path).st_mode & 0o777) == "0o600"
    mp = multiprocessing.get_context("fork")
    held, release = mp.Event(), mp.Event()

    def hold() -> None:
        with status_lock(ctx.run_dir):
            held.set()
            release.wait(30)

    p = mp.Process(target=hold)
    p.start()
    try:
        assert held.wait(10)
        with pytest.raises(RunError, match="could not lock"), status_lock(ctx.run_dir, timeout=0.3):
            pass
    finally:
        release.set()
        p.join(10)
    with status_lock(ctx.run_dir, timeout=5):
        pass
