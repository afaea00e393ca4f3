"""Runs on an engine that does not see the host's files: the run dir travels through the Engine API.

Each test runs on the second engine (see conftest.py) with the mode left to the probe (``auto``),
and checks the same files, statuses and outcome commits a local run gives.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import git
import pytest

from dad_sandbox import AgentRunner, IsolatedExecution, RunContext, RunStatus, load_policy
from dad_sandbox.run import read_metadata
from dad_sandbox.sandbox import RunResult
from dad_sandbox.sandbox._engine_view import TRANSFER_ENV, engine_sees
from dad_sandbox.sandbox.engine._docker import DockerEngine

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _auto_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRANSFER_ENV, raising=False)


def _run(url: str, ctx: RunContext, go: Any, policy: Any = "untrusted") -> RunResult:
    async def main() -> RunResult:
        engine = DockerEngine(base_url=url)
        try:
            async with IsolatedExecution(ctx, policy, engine=engine) as execution:
                return await go(execution)
        finally:
            await engine.close()

    return asyncio.run(main())


def recovered(url: str, project: Path, run_dir: Path) -> list[Any]:
    """What a new supervisor's ``recover`` did with ``run_dir`` (its supervisor was killed)."""
    from dad_sandbox import Supervisor

    async def recover() -> list[Any]:
        engine = DockerEngine(base_url=url)
        try:
            async with Supervisor(project_root=project, engine=engine, recover_on_start=False) as sup:
                return await sup.recover(wait=True)
        finally:
            await engine.close()

    return [o for o in asyncio.run(recover()) if o.run_dir == str(run_dir)]


def run_cmd(url: str, project: Path, script: str, **overrides: Any) -> tuple[RunContext, RunResult]:
    ctx = RunContext("exec", project, run_root=project.parent / "runs")
    ctx.setup_run()
    policy = load_policy("untrusted").with_overrides(**overrides) if overrides else load_policy("untrusted")
    return ctx, _run(url, ctx, lambda ex: ex.run_command(["sh", "-c", script]), policy)


def run_agent(url: str, project: Path, agent: Any, **ctx_kw: Any) -> tuple[RunContext, RunResult]:
    ctx = RunContext(agent.id, project, **ctx_kw)
    ctx.setup_run()
    return ctx, _run(url, ctx, lambda ex: ex.run(AgentRunner(agent, ctx)))


def test_probe_tells_the_engines_apart(remote_url: str, tmp_path: Path) -> None:
    """The local engine sees the host's run root, the second engine does not (no URL guessing)."""
    from tests.integration.conftest import IMAGE

    async def probe(url: str | None) -> bool:
        engine = DockerEngine(base_url=url)
        try:
            return await engine_sees(engine, tmp_path, IMAGE)
        finally:
            await engine.close()

    assert asyncio.run(probe(None)) is True
    assert asyncio.run(probe(remote_url)) is False
    assert list(tmp_path.iterdir()) == []  # the probe folder is gone


def test_a_run_comes_back_with_its_files(remote_url: str, project: Path) -> None:
    """Files the run writes reach the host run dir; output, status and the mode are recorded."""
    ctx, result = run_cmd(remote_url, project, "mkdir -p a/b && echo hi > a/b/out.txt && cat /dad/project/sentinel.txt")
    assert result.status == RunStatus.COMPLETED, result.error
    assert (ctx.run_dir / "a" / "b" / "out.txt").read_text() == "hi\n"
    md = read_metadata(ctx.run_dir)
    assert md.run_dir_mode == "copy"
    assert md.run_dir_copy is not None and md.run_dir_copy["copy_out"]["complete"] is True
    assert "host data" in (ctx.trace_dir / "logs.jsonl").read_text()  # the project was copied in, read-only


def test_a_failing_run_is_failed(remote_url: str, project: Path) -> None:
    """A non-zero exit is ``failed (exit_code)`` and what it wrote before still comes back."""
    ctx, result = run_cmd(remote_url, project, "echo partial > p.txt; echo boom >&2; exit 3")
    assert (result.status, result.reason, result.exit_code) == (RunStatus.FAILED, "exit_code", 3)
    assert "boom" in (result.error or "")
    assert (ctx.run_dir / "p.txt").read_text() == "partial\n"


def test_a_timeout_is_timed_out_and_keeps_its_files(remote_url: str, project: Path) -> None:
    """The deadline kills the run on the remote engine; the files written before come back."""
    ctx, result = run_cmd(remote_url, project, "echo before > f.txt; sleep 60", timeout=2)
    assert result.status == RunStatus.TIMED_OUT, result.error
    assert (ctx.run_dir / "f.txt").read_text() == "before\n"


def test_over_the_disk_quota_fails_while_copying_back(remote_url: str, project: Path) -> None:
    """A run dir larger than the quota stops the copy at the quota and fails the run."""
    ctx, result = run_cmd(remote_url, project, "head -c 3000000 /dev/zero > big; echo done", disk_quota=1 << 20)
    assert (result.status, result.reason) == (RunStatus.FAILED, "disk_quota"), result.error
    assert not (ctx.run_dir / "big").exists()


def test_masks_hold_in_copy_mode(remote_url: str, project: Path) -> None:
    """``.trace/`` and ``static_inputs/`` stay read-only in the container; the host keeps its own."""
    script = ("touch .trace/x 2>/dev/null && echo trace-writable; touch static_inputs/x 2>/dev/null && echo si-writable;"
              "mv static_inputs gone 2>/dev/null && echo si-moved; ls /dad/runs; true")
    ctx, result = run_cmd(remote_url, project, script)
    assert result.status == RunStatus.COMPLETED, result.error
    logs = (ctx.trace_dir / "logs.jsonl").read_text()
    assert "writable" not in logs and "si-moved" not in logs
    assert ctx.run_id in logs
    assert (ctx.run_dir / "static_inputs").is_dir() and not (ctx.run_dir / "gone").exists()


def test_a_hostile_run_plants_nothing_for_the_host(remote_url: str, project: Path, tmp_path: Path) -> None:
    """Links out, setuid files, FIFOs and escape-code names never reach the host as traps."""
    target = tmp_path / "host-secret"
    target.write_text("host")
    script = (
        f"ln -s {target} out-link; ln -s ../../.. up; ln -s /etc/passwd .runner/trace.jsonl;"
        "echo x > suid; chmod 4755 suid; mkfifo fifo; echo e > \"$(printf 'e\\033]0;pwn\\007')\";"
        "mkdir node && ln -s /etc node/etc; ln suid zz-hard; true"
    )
    ctx, result = run_cmd(remote_url, project, script)
    assert result.status == RunStatus.COMPLETED, result.error
    assert target.read_text() == "host"
    for path in ctx.run_dir.rglob("*"):
        if path.is_symlink():
            pytest.fail(f"a link came back: {path} -> {os.readlink(path)}")
        assert not stat.S_ISFIFO(path.lstat().st_mode)
        assert not path.lstat().st_mode & (stat.S_ISUID | stat.S_ISGID)
    md = read_metadata(ctx.run_dir)
    refused = "\n".join(md.tampering)
    assert "out-link" in refused and "up" in refused and "fifo" in refused and "zz-hard: a hard link" in refused
    assert "\x1b" not in refused and "\x07" not in refused
    assert (ctx.run_dir / "suid").read_text() == "x\n"


def test_outcome_commit_and_rerun(remote_url: str, project: Path) -> None:
    """A component run commits its outcomes; a re-run sees the previous run read-only and skips."""
    from sbx_components.flows import counted_agent

    first, r1 = run_agent(remote_url, project, counted_agent)
    assert r1.status == RunStatus.COMPLETED, r1.error
    assert (first.run_dir / "executed.log").read_text().split() == ["counted.main.a", "counted.main.b", "counted.main.c"]
    md = read_metadata(first.run_dir)
    assert md.outcome_commit and md.run_dir_mode == "copy"
    repo = git.Repo(first.layout.outcome_repo_dir)
    assert repo.commit(f"run/{first.run_id}").message.strip() == f"[{first.run_id}] Run completed"

    again, r2 = run_agent(remote_url, project, counted_agent, previous_run_id=first.run_id,
                          start_hierarchy_path="counted.main.b")
    assert r2.status == RunStatus.COMPLETED, r2.error
    assert (again.run_dir / "executed.log").read_text().split() == ["counted.main.b", "counted.main.c"]
    out_b = next(n["output"] for n in r2.nodes if n["hierarchy_path"] == "counted.main.b")
    assert out_b["saw"] == [first.run_id] and out_b["previous_writable"] == []
    assert read_metadata(again.run_dir).outcome_commit


SUPERVISOR = """
import asyncio, sys
from pathlib import Path
from dad_sandbox import IsolatedExecution, RunContext
ctx = RunContext("exec", Path(sys.argv[1]))
ctx.setup_run()
async def go():
    async with IsolatedExecution(ctx, "untrusted") as ex:
        await ex.run_command(["sh", "-c", sys.argv[2]])
asyncio.run(go())
"""


def test_recovery_finalizes_a_copy_mode_run_and_removes_its_volumes(remote_url: str, project: Path) -> None:
    """SIGKILL the supervisor mid-run: a later one re-attaches, copies the run dir back, removes the volumes."""
    import signal
    import subprocess
    import sys
    import time


    runs = project / "runs"
    env = {**os.environ, "DOCKER_HOST": remote_url}
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(project), "echo a > a.txt; sleep 4; echo b > b.txt"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = None
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and run_dir is None:
            for d in runs.iterdir() if runs.is_dir() else []:
                try:
                    if read_metadata(d).status == RunStatus.RUNNING:
                        run_dir = d
                except Exception:
                    pass
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert run_dir is not None, "the run never started"

    found = recovered(remote_url, project, run_dir)
    assert [o.status for o in found] == ["completed"], found
    assert (run_dir / "a.txt").read_text() == "a\n" and (run_dir / "b.txt").read_text() == "b\n"
    assert read_metadata(run_dir).run_dir_mode == "copy"


def test_gc_removes_volumes_and_loaders_a_dead_supervisor_left(remote_url: str, remote_api: Any, project: Path) -> None:
    """Volumes, a loader and a probe labelled by a supervisor that no longer runs are removed by gc; others stay."""
    import socket
    import subprocess

    from dad_sandbox import Supervisor
    from dad_sandbox.sandbox import _labels
    from dad_sandbox.sandbox._remote_rundir import LOADER_LABEL
    from tests.integration.conftest import IMAGE

    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()
    dead = {_labels.SUPERVISOR: f"{host}:{gone.pid}", _labels.SUPERVISOR_HOST: host,
            _labels.SUPERVISOR_PID: str(gone.pid), _labels.SUPERVISOR_START: "1"}
    run_dir = str(project / "runs" / "run_20260101_000000_abcdef")
    remote_api.create_volume("dad-left-run", labels={_labels.RUN_ID: "run_20260101_000000_abcdef",
                                                     _labels.RUN_DIR: run_dir, **dead})
    alive = {**dead, **_labels.supervisor_identity()}
    remote_api.create_volume("dad-alive-run", labels={_labels.RUN_ID: "run_x", _labels.RUN_DIR: run_dir, **alive})
    loader = remote_api.create_container(IMAGE, ["true"], labels={LOADER_LABEL: "run_20260101_000000_abcdef",
                                                                   _labels.RUN_DIR: run_dir, **dead})["Id"]
    probe = remote_api.create_container(IMAGE, ["true"], labels={"dad.probe": "1", **dead,
                                                                  _labels.RUN_DIR: str(project / "runs" / ".dad-probe-x")})["Id"]

    async def gc() -> list[Any]:
        engine = DockerEngine(base_url=remote_url)
        try:
            async with Supervisor(project_root=project, engine=engine, recover_on_start=False) as sup:
                return await sup.gc()
        finally:
            await engine.close()

    try:
        found = {(o.state, o.action.value) for o in asyncio.run(gc()) if o.run_dir == run_dir}
        assert found == {("volume", "removed"), ("loader", "removed")}
        assert not remote_api.containers(all=True, filters={"id": probe})
        names = {v["Name"] for v in remote_api.volumes().get("Volumes") or []}
        assert "dad-left-run" not in names and "dad-alive-run" in names
        assert not remote_api.containers(all=True, filters={"id": loader})
    finally:
        remote_api.remove_volume("dad-alive-run", force=True)
