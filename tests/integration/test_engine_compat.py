"""What any Docker-compatible engine must give a run, whatever its quirks (run against Docker and Podman)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from dad_sandbox import IsolatedExecution, RunContext, load_policy
from dad_sandbox.errors import EngineError
from dad_sandbox.run import read_metadata
from tests._support import IN_CI

from ._runs import run_cmd


def test_run_has_no_network_but_loopback(project: Path) -> None:
    """A run under the untrusted policy sees only ``lo`` and no route, also where the engine ignores NetworkDisabled."""
    ctx, result = run_cmd(project, "ls /sys/class/net; echo routes; tail -n +2 /proc/net/route")
    logs = (ctx.run_dir / ".trace" / "logs.jsonl").read_text()
    assert result.status == "completed", result.error
    assert '"lo"' in logs and '"routes"' in logs
    assert "eth0" not in logs and "00000000" not in logs  # no interface but lo, no default route


def test_masked_run_root_is_empty_inside(project: Path) -> None:
    """The run root inside the project is masked by an empty tmpfs: no copy of other runs' files goes in."""
    (project / "runs" / "other_run").mkdir(parents=True)
    (project / "runs" / "other_run" / "secret.txt").write_text("another run's output")
    ctx, result = run_cmd(project, "ls -A /dad/project/runs | wc -l; cat /dad/project/runs/other_run/secret.txt",
                          run_root=project / "runs")
    logs = (ctx.run_dir / ".trace" / "logs.jsonl").read_text()
    assert "another run's output" not in logs
    assert result.status == "failed"  # cat found nothing to read


def test_gvisor_policy_runs_under_gvisor(project: Path, docker_api) -> None:
    """The gvisor policy runs on gVisor's kernel, or is refused; it never runs on the host kernel.

    Skipped (with the refusal) on an engine that ignores the runtime a container asks for.
    """
    if "runsc" not in (docker_api.info().get("Runtimes") or {}):
        if IN_CI:
            pytest.fail("runtime runsc is not registered with the engine: run 'make engine RUNTIME=runsc'")
        pytest.skip("runtime runsc is not registered with the engine")
    ctx = RunContext("exec", project, run_root=project.parent / "runs")
    ctx.setup_run()

    async def go():
        async with IsolatedExecution(ctx, load_policy("gvisor")) as execution:
            return await execution.run_command(["cat", "/proc/version"])

    try:
        result = asyncio.run(go())
    except EngineError as exc:
        assert "ignores the OCI runtime" in str(exc)
        assert read_metadata(ctx.run_dir).status == "crashed"
        pytest.skip(f"refused, as it must be: {exc}")
    logs = (ctx.run_dir / ".trace" / "logs.jsonl").read_text()
    assert result.status == "completed", result.error
    assert "Linux version" in logs
    assert f"Linux version {os.uname().release}" not in logs  # not the host's kernel


LIMITS_SCRIPT = r"""
import ctypes, json, os, resource
def first(*paths):
    for p in paths:
        try:
            return open(p).read().strip()
        except OSError:
            pass
libc = ctypes.CDLL(None, use_errno=True)
traced = libc.ptrace(0, 0, 0, 0)  # PTRACE_TRACEME: Docker's default profile allows it, ours refuses it
print(json.dumps({
    "memory": first("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"),
    "pids": first("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"),
    "fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[1],
    "seccomp": [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")][0],
    "ptrace": [traced, ctypes.get_errno()],
}))
"""


def test_limits_and_seccomp_profile_reach_the_container(project: Path) -> None:
    """Memory, pids and file-size limits and the policy's own seccomp profile are in force inside the run."""
    ctx = RunContext("exec", project, run_root=project.parent / "runs")
    ctx.setup_run()
    policy = load_policy("untrusted").with_overrides(memory="96m", pids_limit=77, max_file_size="3m", tmpfs={"/tmp": "8m"})

    async def go():
        async with IsolatedExecution(ctx, policy) as execution:
            return await execution.run_command(["python3", "-c", LIMITS_SCRIPT])

    result = asyncio.run(go())
    assert result.status == "completed", result.error
    line = next(json.loads(r)["message"] for r in (ctx.run_dir / ".trace" / "logs.jsonl").read_text().splitlines()
                if json.loads(r).get("stream") == "stdout")
    facts = json.loads(line)
    assert int(facts["memory"]) == 96 << 20
    assert facts["pids"] == "77"
    assert facts["fsize"] == 3 << 20
    assert facts["seccomp"] == "2"
    assert facts["ptrace"] == [-1, 1]  # EPERM from our profile, not Docker's default
