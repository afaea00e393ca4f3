"""The DAD docs' lifecycle with only imports changed, and the CLI end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dad_sandbox.run import RunStatus, read_metadata
from tests._support import closed_to_others

from .conftest import labelled, wait_for_status

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "dad_sandbox.cli"]


def test_seed_lifecycle_runs_with_imports_changed(project: Path) -> None:
    """setup_run -> register -> read_static_inputs -> runner -> IsolatedExecution -> complete_run."""
    from sbx_components.flows import In, ok_agent

    from dad_sandbox import AgentRunner, IsolatedExecution, RunContext  # the only changed line

    async def lifecycle():
        run_context = RunContext(root_component_id="agent", project_root=project, run_root=project / "runs",
                                 observability_settings=None, previous_run_id=None, start_hierarchy_path=None)
        run_context.setup_run(run_id_prefix="test")
        run_context.register_node_static_input("first", In(name="v"))
        run_context.read_static_inputs()
        runner = AgentRunner(ok_agent, run_context)
        async with IsolatedExecution(run_context) as execution:
            result = await execution.run(runner)
        run_context.complete_run(status="completed")
        return run_context, result

    ctx, result = asyncio.run(lifecycle())
    assert result.status == RunStatus.COMPLETED, result.error
    run_dir = ctx.run_dir
    assert run_dir.parent == project / "runs" and run_dir.name.startswith("test_run_")
    expected = {
        ".trace/dad_metadata.json", ".trace/trace.jsonl", ".trace/metrics.jsonl", ".trace/logs.jsonl",
        "static_inputs/static_inputs.json",
        "agent/work/first/result.json", "agent/work/first/outcome.json",
        "agent/work/second/result.json", "agent/work/second/outcome.json",
    }
    present = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
    assert expected <= present
    for name in ("trace.jsonl", "logs.jsonl", "metrics.jsonl"):
        for line in (run_dir / ".trace" / name).read_text().splitlines():
            assert isinstance(json.loads(line), dict)
    assert read_metadata(run_dir).status == "completed"


def test_seed_except_branch_keeps_error(project: Path) -> None:
    """The docs' except branch: complete_run(status='failed', error_msg=str(e)) is persisted."""
    from sbx_components.flows import ok_agent

    from dad_sandbox import AgentRunner, IsolatedExecution, RunContext

    async def lifecycle():
        run_context = RunContext(root_component_id="agent", project_root=project)
        try:
            run_context.setup_run()
            runner = AgentRunner(ok_agent, run_context)
            async with IsolatedExecution(run_context, policy="no_such_policy") as execution:
                await execution.run(runner)
            run_context.complete_run(status="completed")
        except Exception as e:
            run_context.complete_run(status="failed", error_msg=str(e))
            return run_context
        raise AssertionError("expected a failure")

    ctx = asyncio.run(lifecycle())
    md = read_metadata(ctx.run_dir)
    assert md.status == "failed" and "no_such_policy" in md.error


def run_cli(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=120, **kw)


def test_cli_exec_json_and_exit_codes(project: Path) -> None:
    """exec --json prints the run as one JSON object; the exit code is 0 only for completed."""
    ok = run_cli("exec", "--json", "--run-root", str(project / "runs"), "--", "python3", "-c", "print(1)", cwd=project)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert {"run_id", "status", "exit_code", "run_dir", "duration_seconds", "error"} <= set(data)
    assert data["status"] == "completed" and Path(data["run_dir"]).is_dir()
    bad = run_cli("exec", "--json", "--", "python3", "-c", "import sys; sys.exit(4)", cwd=project)
    assert bad.returncode == 1 and json.loads(bad.stdout)["exit_code"] == 4
    slow = run_cli("exec", "--json", "--timeout", "1", "--", "sleep", "30", cwd=project)
    assert slow.returncode == 3 and json.loads(slow.stdout)["status"] == "timed_out"


def test_cli_exec_shows_output_and_summary(project: Path) -> None:
    """Without --json, exec replays the command's output and a short summary."""
    res = run_cli("exec", "--", "python3", "-c", "print('visible output')", cwd=project)
    assert res.returncode == 0
    assert "visible output" in res.stdout and "completed" in res.stderr


def test_cli_bad_policy_is_exit_7(project: Path) -> None:
    """A policy that does not exist is a sandbox error (exit 7) with the available names."""
    res = run_cli("exec", "--policy", "nope", "--", "true", cwd=project)
    assert res.returncode == 7 and "untrusted" in res.stderr


def test_cli_run_component(project: Path) -> None:
    """run MODULE:ATTRIBUTE runs a component with static inputs from a file."""
    inputs = project / "inputs.json"
    inputs.write_text(json.dumps({"first": {"name": "from-file"}}))
    res = run_cli("run", "sbx_components.flows:ok_agent", "--json", "--inputs", str(inputs), cwd=project)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["status"] == "completed"
    assert data["nodes"][0]["output"]["hello"] == "from-file"


def test_ctrl_c_cancels_and_cleans_up(project: Path, docker_api) -> None:
    """SIGINT to the CLI ends the run cancelled and leaves no container."""
    proc = subprocess.Popen([*CLI, "exec", "--", "sleep", "60"], cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        runs = project / "runs"
        end = time.monotonic() + 30
        while time.monotonic() < end and not (runs.is_dir() and any(runs.iterdir())):
            time.sleep(0.05)
        run_dir = next(runs.iterdir())
        wait_for_status(run_dir, RunStatus.RUNNING)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    md = read_metadata(run_dir)
    assert md.status == "cancelled"
    assert labelled(docker_api, md.run_id) == set()
    assert proc.returncode == 6, stderr
    assert "cancelled" in stderr


@pytest.mark.skipif(os.environ.get("DAD_SKIP_EXAMPLE") == "1", reason="explicitly skipped")
def test_hello_example_completes(tmp_path: Path) -> None:
    """examples/hello (what `make run` shows) completes in its container."""
    if os.getuid() == 0 and (closed := closed_to_others()) is not None:
        pytest.skip(f"{closed} is closed to other users, so the run's user (65534, as the host is root) cannot "
                    "read the project: a documented limit (README, 'The run directory')")
    res = subprocess.run([sys.executable, "-m", "examples.hello.run"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "status    completed" in res.stdout
    assert "hello.main.write_report" in res.stdout
