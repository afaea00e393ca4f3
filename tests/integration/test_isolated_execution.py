"""IsolatedExecution on a real Docker engine: statuses, layout, metadata, isolation, cleanup."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from dad_sandbox import AgentRunner, FlowRunner, IsolatedExecution, RunContext, RunStatus, load_policy
from dad_sandbox.errors import ExecutionStateError, ImageNotFound, RunFailed, RunTimedOut
from dad_sandbox.run import read_metadata

from .conftest import labelled, wait_for_status


def new_ctx(project: Path, root: str = "exec") -> RunContext:
    ctx = RunContext(root, project, run_root=project.parent / "runs")
    ctx.setup_run()
    return ctx


async def command(project: Path, argv: list[str], policy="untrusted", **kw):
    ctx = new_ctx(project)
    async with IsolatedExecution(ctx, policy, **kw) as execution:
        return ctx, await execution.run_command(argv)


def log_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / ".trace" / "logs.jsonl").read_text().splitlines()]


def test_command_completes_with_output_and_metadata(project: Path) -> None:
    """A command that exits 0 is completed; its output is in logs.jsonl; metadata is full."""
    code = "import sys; print('to stdout'); print('to stderr', file=sys.stderr)"
    ctx, result = asyncio.run(command(project, ["python3", "-c", code]))
    assert result.status == RunStatus.COMPLETED and result.exit_code == 0 and result.error is None
    assert result.raise_for_status() is result
    recs = [(r["stream"], r["message"]) for r in log_records(ctx.run_dir)]
    assert ("stdout", "to stdout") in recs and ("stderr", "to stderr") in recs
    md = read_metadata(ctx.run_dir)
    assert md.status == "completed" and md.execution == "isolated"
    assert md.image_id and md.image_id.startswith("sha256:")
    assert md.container_id and md.policy_name == "untrusted" and md.policy_hash == load_policy("untrusted").hash
    assert md.started_at and md.completed_at and md.duration_seconds is not None and md.duration_seconds >= 0
    assert md.supervisor["pid"] == os.getpid()
    assert md.output.bytes_kept > 0 and not md.output.truncated
    assert md.command == ["python3", "-c", code]
    saved_policy = json.loads((ctx.trace_dir / "policy.json").read_text())
    assert saved_policy["name"] == "untrusted"


def test_nonzero_exit_is_failed(project: Path) -> None:
    """A non-zero exit code makes the run failed, with the code and stderr in the error."""
    ctx, result = asyncio.run(command(project, ["python3", "-c", "import sys; print('bad thing', file=sys.stderr); sys.exit(3)"]))
    assert (result.status, result.reason, result.exit_code) == (RunStatus.FAILED, "exit_code", 3)
    assert "code 3" in result.error and "bad thing" in result.error
    with pytest.raises(RunFailed):
        result.raise_for_status()


def test_component_runs_in_its_container(project: Path) -> None:
    """run(runner) executes the agent inside the container and writes the DESIGN.md layout."""
    from sbx_components.flows import In, ok_agent

    ctx = new_ctx(project, "agent")
    ctx.register_node_static_input("first", In(name="sandboxed", count=2))

    async def go():
        async with IsolatedExecution(ctx) as execution:
            return await execution.run(AgentRunner(ok_agent, ctx))

    result = asyncio.run(go())
    assert result.status == RunStatus.COMPLETED, result.error
    assert [n["hierarchy_path"] for n in result.nodes] == ["agent.work.first", "agent.work.second"]
    second = ctx.run_dir / "agent" / "work" / "second"
    out = json.loads((second / "result.json").read_text())["output"]
    assert out["seen"] == "sandboxed"
    assert out["uid"] == (65534 if os.getuid() == 0 else os.getuid())  # non-root inside
    assert (second / "outcome.json").is_file() and (second / "extra.txt").read_text() == "made in agent.work.second"
    spans = [json.loads(line) for line in (ctx.trace_dir / "trace.jsonl").read_text().splitlines()]
    assert {s["attributes"]["dad.hierarchy_path"] for s in spans} >= {"agent.work.first", "agent.work.second"}
    md = read_metadata(ctx.run_dir)
    assert md.component == "sbx_components.flows:ok_agent" and md.status == "completed"
    # everything the run left belongs to the host user again
    for path in [ctx.run_dir, *ctx.run_dir.rglob("*")]:
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid()), path


def test_node_exception_fails_the_run(project: Path) -> None:
    """A node that raises makes the run failed with its hierarchy path and traceback, never completed."""
    from sbx_components.flows import bad_agent

    ctx = new_ctx(project, "bad")
    ctx.register_node_static_input("first", {"name": "x"})

    async def go():
        async with IsolatedExecution(ctx) as execution:
            return await execution.run(AgentRunner(bad_agent, ctx))

    result = asyncio.run(go())
    assert (result.status, result.reason) == (RunStatus.FAILED, "node_failed")
    assert "bad.work.explode" in result.error and "kaboom from a node" in result.error and "Traceback" in result.error
    assert not (ctx.run_dir / "bad" / "work" / "never").exists()
    ctx.complete_run(status="completed")  # a later call cannot turn it into completed
    assert read_metadata(ctx.run_dir).status == "failed"


def test_deadline_kills_and_times_out(project: Path) -> None:
    """Past the wall-clock deadline the container is killed and the run is timed_out."""
    from sbx_components.flows import sleepy_flow

    ctx = new_ctx(project, "sleepy")

    async def go():
        async with IsolatedExecution(ctx, timeout=1.5) as execution:
            return await execution.run(FlowRunner(sleepy_flow, ctx))

    result = asyncio.run(go())
    assert (result.status, result.reason) == (RunStatus.TIMED_OUT, "deadline")
    assert result.duration_seconds < 10
    with pytest.raises(RunTimedOut):
        result.raise_for_status()
    ctx.complete_run(status="completed")
    assert read_metadata(ctx.run_dir).status == "timed_out"


def test_out_of_memory_is_oom_killed(project: Path) -> None:
    """Going over the memory limit ends the run as oom_killed."""
    policy = load_policy("untrusted").with_overrides(memory="64m", tmpfs={"/tmp": "8m"})
    _, result = asyncio.run(command(project, ["python3", "-c", "x = bytearray(512 << 20)"], policy))
    assert (result.status, result.reason) == (RunStatus.OOM_KILLED, "oom")
    assert "memory limit" in result.error


def test_child_oom_with_surviving_parent_is_oom_killed(project: Path) -> None:
    """A child OOM-killed while PID 1 exits 0 is still oom_killed (reason oom:child), not completed."""
    policy = load_policy("untrusted").with_overrides(memory="64m", tmpfs={"/tmp": "8m"})
    code = (
        "import subprocess, sys\n"
        "r = subprocess.run([sys.executable, '-c', 'x = bytearray(512 << 20)'])\n"
        "print('child returned', r.returncode)\n"
    )
    ctx, result = asyncio.run(command(project, ["python3", "-c", code], policy))
    assert (result.status, result.reason, result.exit_code) == (RunStatus.OOM_KILLED, "oom:child", 0)
    assert any("child returned -9" in r["message"] for r in log_records(ctx.run_dir))


def test_cancellation_kills_and_removes(project: Path, docker_api) -> None:
    """Cancelling the caller's task ends the run cancelled and removes its container."""
    ctx = new_ctx(project)

    async def go():
        async with IsolatedExecution(ctx) as execution:
            task = asyncio.create_task(execution.run_command(["sleep", "60"]))
            await asyncio.to_thread(wait_for_status, ctx.run_dir, RunStatus.RUNNING)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(go())
    md = read_metadata(ctx.run_dir)
    assert (md.status, md.reason) == ("cancelled", "cancelled")
    assert labelled(docker_api, ctx.run_id) == set()


def test_isolation_defaults(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """untrusted: only loopback, read-only project and root fs, writable /tmp, no host env, no caps."""
    monkeypatch.setenv("DAD_TEST_SECRET", "hunter2")
    code = r"""
import json, os
def writable(path):
    try:
        open(path, "w").write("x"); return True
    except OSError:
        return False
caps = [l for l in open("/proc/self/status") if l.startswith("CapEff")][0].split()[1]
print(json.dumps({
    "net": sorted(os.listdir("/sys/class/net")),
    "project_writable": writable("/dad/project/sentinel.txt"),
    "etc_writable": writable("/etc/x"),
    "tmp_writable": writable("/tmp/x"),
    "secret": os.environ.get("DAD_TEST_SECRET"),
    "uid": os.getuid(),
    "caps": caps,
    "nnp": [l for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0].split()[1],
}))
"""
    ctx, result = asyncio.run(command(project, ["python3", "-c", code]))
    assert result.status == RunStatus.COMPLETED, result.error
    facts = json.loads(next(r["message"] for r in log_records(ctx.run_dir) if r["stream"] == "stdout"))
    assert facts["net"] == ["lo"]
    assert facts["project_writable"] is False and facts["etc_writable"] is False and facts["tmp_writable"] is True
    assert facts["secret"] is None
    assert facts["uid"] != 0
    assert int(facts["caps"], 16) == 0 and facts["nnp"] == "1"
    assert (project / "sentinel.txt").read_text() == "host data"


def test_one_run_per_context(project: Path) -> None:
    """A second run on the same context is refused before any container starts."""
    async def go():
        ctx = new_ctx(project)
        async with IsolatedExecution(ctx) as execution:
            await execution.run_command(["true"])
            with pytest.raises(ExecutionStateError, match="already ran"):
                await execution.run_command(["true"])

    asyncio.run(go())


def test_missing_image_is_an_engine_error(project: Path) -> None:
    """A policy naming an absent image fails clearly (nothing is pulled) and the run is finalized."""
    policy = load_policy("untrusted").with_overrides(image="dad-sandbox-no-such-image:0")
    ctx = new_ctx(project)

    async def go():
        async with IsolatedExecution(ctx, policy) as execution:
            await execution.run_command(["true"])

    with pytest.raises(ImageNotFound, match="make image"):
        asyncio.run(go())
    md = read_metadata(ctx.run_dir)
    assert (md.status, md.reason) == ("crashed", "engine_error")
