"""The supervisor and the service on the in-memory FakeEngine: logic only, no Docker, fast."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from dad_sandbox import IsolatedExecution, RunContext, RunStatus, Supervisor, load_policy
from dad_sandbox.errors import EngineUnavailable, ImageNotFound
from dad_sandbox.run import read_metadata
from dad_sandbox.sandbox import OrphanAction
from dad_sandbox.testing import FakeEngine

POLICY = load_policy("untrusted").with_overrides(metrics_interval=0.05)


def run(project: Path, argv: list[str], engine: FakeEngine | None = None, **kw):
    engine = engine or FakeEngine()
    ctx = RunContext("exec", project)
    ctx.setup_run()

    async def go():
        async with IsolatedExecution(ctx, kw.pop("policy", POLICY), engine=engine, **kw) as execution:
            return await execution.run_command(argv)

    return ctx, asyncio.run(go()), engine


@pytest.mark.parametrize(
    ("argv", "status", "reason", "code"),
    [
        (["print", "hi"], "completed", None, 0),
        (["exit", "3"], "failed", "exit_code", 3),
        (["oom"], "oom_killed", "oom", 137),
        (["oom-child", ";", "exit", "0"], "oom_killed", "oom:child", 0),
        (["signal", "SIGSEGV"], "crashed", "signal:SIGSEGV", 139),
        (["signal", "SIGXFSZ"], "failed", "disk_quota", 153),
    ],
)
def test_status_from_engine_state(tmp_path: Path, argv, status, reason, code) -> None:
    """Every engine outcome becomes its documented status and reason, and the container is removed."""
    ctx, result, engine = run(tmp_path, argv)
    assert (result.status.value, result.reason, result.exit_code) == (status, reason, code)
    assert engine.containers == {}
    assert read_metadata(ctx.run_dir).status.value == status


def test_output_reaches_logs(tmp_path: Path) -> None:
    """stdout and stderr lines become records in logs.jsonl."""
    ctx, result, _ = run(tmp_path, ["print", "out", ";", "eprint", "err"])
    recs = [json.loads(x) for x in (ctx.trace_dir / "logs.jsonl").read_text().splitlines()]
    assert [(r["stream"], r["message"]) for r in recs] == [("stdout", "out"), ("stderr", "err")]


def test_deadline(tmp_path: Path) -> None:
    """A run past its deadline is killed: timed_out."""
    _, result, engine = run(tmp_path, ["sleep", "30"], timeout=0.2)
    assert (result.status, result.reason) == (RunStatus.TIMED_OUT, "deadline")
    assert "kill" in engine.calls and engine.containers == {}


def test_inspect_before_remove(tmp_path: Path) -> None:
    """The container state is read before the container is removed."""
    _, _, engine = run(tmp_path, ["exit", "0"])
    calls = engine.calls
    assert calls.index("inspect") < calls.index("remove")


def test_missing_image(tmp_path: Path) -> None:
    """A missing image is an engine error, and the run is finalized crashed/engine_error."""
    with pytest.raises(ImageNotFound):
        run(tmp_path, ["exit", "0"], FakeEngine(images=set()))
    md = read_metadata(next((tmp_path / "runs").iterdir()))
    assert (md.status, md.reason) == ("crashed", "engine_error")


def test_engine_unavailable_on_enter(tmp_path: Path) -> None:
    """No engine: entering IsolatedExecution fails clearly before anything runs."""
    with pytest.raises(EngineUnavailable):
        run(tmp_path, ["exit", "0"], FakeEngine(available=False))


def test_cancel_removes(tmp_path: Path) -> None:
    """Cancelling the caller kills and removes the container; the run is cancelled."""
    engine = FakeEngine()
    ctx = RunContext("exec", tmp_path)
    ctx.setup_run()

    async def go():
        async with IsolatedExecution(ctx, POLICY, engine=engine) as execution:
            task = asyncio.create_task(execution.run_command(["sleep", "30"]))
            while read_metadata(ctx.run_dir).status != RunStatus.RUNNING:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(go())
    assert read_metadata(ctx.run_dir).status == "cancelled" and engine.containers == {}


def test_warm_pool_and_recovery(tmp_path: Path) -> None:
    """Pooled runs use one container each; orphans of a dead owner are found by label and cleaned."""
    engine = FakeEngine()

    async def go():
        async with Supervisor(engine=engine, project_root=tmp_path, warm_pool={"untrusted": 2},
                              recover_on_start=False) as sup:
            await sup.pool_ready(timeout=10)
            results = [await sup.submit(["print", f"n{i}"]).wait() for i in range(3)]
            return results

    results = asyncio.run(go())
    assert all(r.ok for r in results)
    assert len({r.metadata.warm_pool_slot for r in results}) == 3
    assert engine.containers == {} and not list((tmp_path / "runs" / ".pool").glob("pool_*"))

    # an orphan: a container whose supervisor pid is dead, of a run that never started
    ctx = RunContext("exec", tmp_path)
    ctx.setup_run()
    ctx.record(policy=POLICY.model_dump(mode="json"))

    async def orphan_and_gc():
        from dad_sandbox.sandbox._ownership import resolve_user
        from dad_sandbox.sandbox._spec import build_spec

        spec = build_spec(ctx, POLICY, resolve_user("auto"), ["sleep", "30"], deadline=0)
        spec.labels.update({"dad.supervisor.pid": "999999999", "dad.supervisor.start": "1"})
        await engine.create(spec)
        async with Supervisor(engine=engine, project_root=tmp_path, recover_on_start=False) as sup:
            return await sup.gc()

    (found,) = asyncio.run(orphan_and_gc())
    assert found.action == OrphanAction.ABANDONED and engine.containers == {}
    assert read_metadata(ctx.run_dir).status == "abandoned"
    assert os.path.isdir(ctx.run_dir)
