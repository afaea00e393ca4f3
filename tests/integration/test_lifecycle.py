"""Every run ends with one honest status and no container, whatever happens to its supervisor:
deadlines enforced in the container by dad-init, signals, cancellation at any moment, orphans
without a container, and one `serve` per socket."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dad_sandbox import RunStatus, Supervisor
from dad_sandbox.errors import PolicyError
from dad_sandbox.run import RunContext, read_metadata
from dad_sandbox.sandbox import IsolatedExecution, OrphanAction
from tests._support import IN_CI

from .conftest import container_exists, labelled, wait_for_status

CLI = [sys.executable, "-m", "dad_sandbox.cli"]

SUPERVISOR = """
import sys
from dad_sandbox.sync import exec_command
root, policy, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
exec_command(sys.argv[4:], policy=policy, timeout=timeout, project_root=root, run_root=root + "/runs")
"""


@pytest.fixture(params=["runc", "runsc"])
def policy_name(request: pytest.FixtureRequest, docker_api) -> str:
    """The untrusted policy on runc, the gvisor policy on runsc (skipped if runsc is not registered)."""
    if request.param == "runsc" and "runsc" not in (docker_api.info().get("Runtimes") or {}):
        msg = "runtime runsc is not registered with the engine: run 'make engine RUNTIME=runsc'"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return "gvisor" if request.param == "runsc" else "untrusted"


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a background job of a non-interactive shell inherits


def _new_run_dir(runs: Path, before: set[Path], timeout: float = 30) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        new = [d for d in (set(runs.iterdir()) if runs.is_dir() else set()) - before
               if (d / ".trace" / "dad_metadata.json").exists()]
        if new:
            return new[0]
        time.sleep(0.02)
    raise AssertionError("no run dir appeared")


def _spawn_supervisor(project: Path, policy: str, timeout: float, argv: list[str]) -> tuple[subprocess.Popen, Path]:
    runs = project / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(project), policy, str(timeout), *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, _new_run_dir(runs, before)


def _recover(project: Path, *, gc: bool = False, dry_run: bool = False) -> list:
    async def go():
        async with Supervisor(project_root=project, recover_on_start=False) as sup:
            return await (sup.gc(dry_run=dry_run) if gc else sup.recover(wait=True))

    return asyncio.run(go())


# ---------------------------------------------------------------------------- deadline without the host


def test_deadline_holds_with_every_supervisor_gone(project: Path, docker_api, policy_name: str) -> None:
    """SIGKILL the supervisor of a `sleep 600` run with a 3 s deadline: dad-init ends the container by
    itself within seconds, with no host process involved; recovery then classifies it timed_out."""
    proc, run_dir = _spawn_supervisor(project, policy_name, 3, ["sleep", "600"])
    try:
        wait_for_status(run_dir, RunStatus.RUNNING, timeout=60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    md = read_metadata(run_dir)
    (cid,) = labelled(docker_api, md.run_id)
    deadline = float(docker_api.inspect_container(cid)["Config"]["Labels"]["dad.deadline"])
    end = time.monotonic() + 60
    while time.monotonic() < end and docker_api.inspect_container(cid)["State"]["Running"]:
        time.sleep(0.1)
    state = docker_api.inspect_container(cid)["State"]
    assert not state["Running"], "the container outlived its deadline with no supervisor"
    assert state["ExitCode"] == 124  # dad-init's deadline exit
    assert time.time() - deadline < 30
    found = [o for o in _recover(project) if o.run_id == md.run_id]
    assert found and found[0].action == OrphanAction.FINALIZED
    md = read_metadata(run_dir)
    assert (md.status, md.reason) == ("timed_out", "deadline"), md.error
    assert labelled(docker_api, md.run_id) == set()


POOLED = """
import asyncio, sys
from dad_sandbox import Supervisor
async def main():
    policy = sys.argv[2]
    async with Supervisor(project_root=sys.argv[1], policy=policy, warm_pool={policy: 1}, recover_on_start=False) as sup:
        await sup.pool_ready()
        handle = sup.submit(["sleep", "600"])
        print(handle.run_dir, flush=True)
        await asyncio.sleep(600)
asyncio.run(main())
"""


def test_pooled_run_deadline_holds_with_its_supervisor_gone(project: Path, docker_api, tmp_path: Path) -> None:
    """A warm-pool container learns its run's deadline at dispatch (the waiter tells dad-init once):
    with the supervisor SIGKILLed, it ends by itself at the run's deadline, not the pool's hour."""
    policy = tmp_path / "short.toml"
    text = (Path(__file__).resolve().parents[2] / "policies" / "untrusted.toml").read_text()
    policy.write_text(text.replace('timeout = "5m"', 'timeout = "3s"'))
    proc = subprocess.Popen([sys.executable, "-c", POOLED, str(project), str(policy)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        run_dir = Path(proc.stdout.readline().strip())
        wait_for_status(run_dir, RunStatus.RUNNING, timeout=60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    md = read_metadata(run_dir)
    assert md.warm_pool_slot
    cid = md.container_id
    end = time.monotonic() + 60
    while time.monotonic() < end and docker_api.inspect_container(cid)["State"]["Running"]:
        time.sleep(0.1)
    assert docker_api.inspect_container(cid)["State"]["ExitCode"] == 124
    _recover(project, gc=True)  # the pool's idle slot (refill) and the finished run
    md = read_metadata(run_dir)
    assert (md.status, md.reason) == ("timed_out", "deadline"), md.error
    assert labelled(docker_api, under=project) == set()


def test_run_cannot_kill_stop_or_read_its_init(project: Path, policy_name: str) -> None:
    """Inside the run, PID 1 is dad-init: kill -9 1 and kill -STOP 1 do nothing, /proc/1/mem stays closed."""
    script = (
        "import os, signal, time\n"
        "print('pid1', open('/proc/1/cmdline','rb').read().split(b'\\0')[0].decode())\n"
        "for sig in (signal.SIGKILL, signal.SIGSTOP):\n"
        "    try: os.kill(1, sig)\n"
        "    except OSError as e: print('kill refused', e.errno)\n"
        "time.sleep(0.5)\n"
        "st = [l for l in open('/proc/1/status') if l.startswith('State:')][0].split()[1]\n"
        "print('init state', st)\n"
        "try:\n"
        "    open('/proc/1/mem', 'rb').read(1); print('mem readable')\n"
        "except OSError: print('mem refused')\n"
    )

    async def go():
        ctx = RunContext("exec", project, run_root=project / "runs")
        ctx.setup_run()
        async with IsolatedExecution(ctx, policy_name, timeout=60) as execution:
            return await execution.run_command(["python3", "-c", script])

    result = asyncio.run(go())
    assert result.status == RunStatus.COMPLETED, result.error
    logs = [json.loads(line) for line in (result.run_dir / ".trace" / "logs.jsonl").read_text().splitlines()]
    out = "\n".join(str(r.get("message")) for r in logs if r.get("stream") == "stdout")
    assert "pid1 /usr/local/bin/dad-init" in out
    state = out.split("init state ", 1)[1].split()[0]
    assert state in ("S", "R"), state  # waiting in sigtimedwait or ticking: neither gone nor stopped (T)
    assert "mem refused" in out


# ---------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_to_the_cli_cancels_its_run(project: Path, docker_api, sig: signal.Signals) -> None:
    """SIGTERM, SIGHUP and SIGINT (the latter inherited as ignored) to `dad-sandbox exec` cancel the
    run promptly: exit code 6, status cancelled, no container."""
    runs = project / "runs"
    env = {**os.environ, "DAD_SANDBOX_NO_SERVER": "1"}
    proc = subprocess.Popen([*CLI, "exec", "--run-root", str(runs), "--", "sleep", "60"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ignore_sigint)
    try:
        run_dir = _new_run_dir(runs, set())
        wait_for_status(run_dir, RunStatus.RUNNING, timeout=60)
        t0 = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    md = read_metadata(run_dir)
    assert proc.returncode == 6, err
    assert (md.status, md.reason) == ("cancelled", "cancelled")
    assert not container_exists(docker_api, md.container_id)
    assert elapsed < 10, f"cancelling took {elapsed:.1f}s"


# ---------------------------------------------------------------------------- cancellation at any point


def test_two_hundred_cancels_at_random_moments(project: Path, docker_api) -> None:
    """200 runs cancelled 0-300 ms after submit (before, during and after create and start): every
    wait() returns a cancelled result, none hangs, no container is left."""
    rng = random.Random(1234)
    delays = [rng.uniform(0, 0.3) for _ in range(200)]

    async def one(sup: Supervisor, delay: float):
        handle = sup.submit(["sleep", "30"])
        await asyncio.sleep(delay)
        handle.cancel()
        result = await asyncio.wait_for(handle.wait(), timeout=60)  # a hang fails here
        return handle, result

    async def go():
        async with Supervisor(project_root=project, max_parallel=8, recover_on_start=False) as sup:
            gate = asyncio.Semaphore(8)

            async def gated(delay: float):
                async with gate:
                    return await one(sup, delay)

            return await asyncio.gather(*(gated(d) for d in delays))

    t0 = time.monotonic()
    outcomes = asyncio.run(go())
    elapsed = time.monotonic() - t0
    statuses = [(r.status.value, r.reason) for _, r in outcomes]
    assert statuses == [("cancelled", "cancelled")] * 200, {s for s in statuses if s != ("cancelled", "cancelled")}
    for handle, _ in outcomes:
        md = read_metadata(handle.run_dir)
        assert md.status == "cancelled" and "crashed" not in (md.error or "")
    assert labelled(docker_api, under=project) == set()
    assert elapsed < 180, f"200 cancels took {elapsed:.0f}s"


# ---------------------------------------------------------------------------- runs without a container

ORPHAN = """
import os, sys
from dad_sandbox.run import RunContext
ctx = RunContext("exec", sys.argv[1], run_root=sys.argv[1] + "/runs")
ctx.setup_run()
print(ctx.run_dir, flush=True)
os._exit(0)   # the supervisor dies before any container exists
"""


def test_runs_that_never_got_a_container_end_abandoned(project: Path) -> None:
    """A run whose supervisor died before create is found by scanning run dirs; gc --dry-run lists it,
    recovery ends it abandoned, and a broken run dir beside it stops neither."""
    broken = project / "runs" / "run_20260101_000000_badbad"
    (broken / ".trace").mkdir(parents=True)
    (broken / ".trace" / "dad_metadata.json").write_text("{not json")
    out = subprocess.run([sys.executable, "-c", ORPHAN, str(project)], capture_output=True, text=True, check=True)
    run_dir = Path(out.stdout.strip())
    assert read_metadata(run_dir).status == "initialized"
    listed = [o for o in _recover(project, gc=True, dry_run=True) if o.run_dir == str(run_dir)]
    assert [o.action for o in listed] == [OrphanAction.WOULD_CLEAN]
    assert read_metadata(run_dir).status == "initialized"
    found = [o for o in _recover(project) if o.run_dir == str(run_dir)]
    assert [(o.action, o.status) for o in found] == [(OrphanAction.ABANDONED, "abandoned")]
    md = read_metadata(run_dir)
    assert (md.status, md.reason) == ("abandoned", "supervisor_lost") and "before the run got a container" in md.error
    assert not [o for o in _recover(project) if o.run_dir == str(run_dir)]  # final now: left alone


def test_preflight_failure_ends_the_run_at_once(project: Path) -> None:
    """A policy that cannot load fails the run (reason preflight) instead of leaving it initialized."""
    ctx = RunContext("exec", project, run_root=project / "runs")
    ctx.setup_run()

    async def go():
        async with IsolatedExecution(ctx, "no-such-policy") as execution:
            await execution.run_command(["true"])

    with pytest.raises(PolicyError):
        asyncio.run(go())
    md = read_metadata(ctx.run_dir)
    assert (md.status, md.reason) == ("failed", "preflight")


# ---------------------------------------------------------------------------- serve


def test_serve_refuses_a_live_socket_and_cleans_a_stale_one(project: Path, tmp_path: Path) -> None:
    """A second `serve` on a live server's socket exits 7 with a clear message and leaves the first
    serving; a socket left by a dead server is replaced."""
    sock = tmp_path / "s" / "supervisor.sock"
    sock.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()  # the file stays, nobody listens: a stale socket
    env = {**os.environ, "DAD_SANDBOX_SOCKET": str(sock)}
    serve = [*CLI, "serve", "--warm-pool", "untrusted=0", "--run-root", str(project / "runs")]
    first = subprocess.Popen(serve, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None and "serving" in first.stdout.readline()
        second = subprocess.run(serve, check=False, cwd=project, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 7 and "already serves" in second.stderr
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(str(sock))  # the first server still owns its socket
        probe.close()
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
    assert first.returncode == 0
    assert not sock.exists()
