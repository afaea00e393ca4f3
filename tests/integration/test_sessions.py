"""Sessions on the real engine: one container across execs, timeouts that kill process trees, caps, files, lifecycle."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dad_sandbox import RunStatus, Session, SessionLimits, Supervisor
from dad_sandbox.errors import SessionError, SessionLimitError
from dad_sandbox.run import read_metadata
from dad_sandbox.sandbox import OrphanAction
from dad_sandbox.sync import SyncSession

from .conftest import container_exists, labelled, wait_for_status

#: Lists the sleepers still alive in the container (the waiter's own `sleep 86400` excluded).
SLEEPERS = ["sh", "-c", "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done | grep -c '^sleep 300' || true"]


def make(project: Path, **kw) -> Session:
    return Session(policy=kw.pop("policy", "untrusted"), project_root=project, run_root=project / "runs", **kw)


def test_state_persists_across_execs_and_run_is_recorded(project: Path, docker_api) -> None:
    """Files, cwd and env work across execs in one container; each exec is a host span; the run ends completed."""

    async def go():
        async with make(project, timeout="2m") as s:
            cid = s.container_id
            await s.write_file("work/data.bin", bytes(range(256)) * 4)
            first = await s.exec(["sh", "-c", "wc -c < data.bin; echo $GREETING; pwd"], cwd=f"{s.workdir}/work",
                                 env={"GREETING": "hi"})
            piped = await s.exec(["python3", "-c", "import sys; print(sys.stdin.read().upper())"], input="abc")
            back = await s.read_file("work/data.bin", text=False)
            failed = await s.exec(["sh", "-c", "echo nope >&2; exit 4"])
            assert container_exists(docker_api, cid)
            return s, cid, first, piped, back, failed

    s, cid, first, piped, back, failed = asyncio.run(go())
    assert first.stdout.split() == ["1024", "hi", f"{s.workdir}/work"]
    assert piped.stdout == "ABC\n"
    assert back == bytes(range(256)) * 4
    assert (failed.exit_code, failed.stderr) == (4, "nope\n")
    assert not container_exists(docker_api, cid)
    md = read_metadata(s.run_dir)
    assert md.status == RunStatus.COMPLETED and md.container_id == cid
    execs = [json.loads(x) for x in (s.run_dir / ".trace" / "trace.jsonl").read_text().splitlines()]
    execs = [sp for sp in execs if sp["name"] == "session.exec"]
    assert len(execs) == 5  # write, two execs, read, the failing exec
    last = execs[-1]["attributes"]
    assert (last["dad.exec.exit_code"], last["dad.exec.stderr_bytes"]) == (4, 5)
    assert "exit 4" in last["dad.exec.argv"]


def test_exec_timeout_kills_children_that_ignore_sigterm(project: Path, docker_api) -> None:
    """A per-exec timeout kills the process and a child that ignores SIGTERM; the session goes on."""

    async def go():
        async with make(project, timeout="2m") as s:
            t0 = time.monotonic()
            slow = await s.exec(["sh", "-c", "trap '' TERM; (trap '' TERM; sleep 300) & sleep 300"], timeout=1)
            took = time.monotonic() - t0
            left = await s.exec(SLEEPERS)
            return slow, took, left

    slow, took, left = asyncio.run(go())
    assert slow.timed_out and slow.exit_code == 137  # TERM ignored: KILL one second later
    assert took < 10
    assert left.stdout.strip() == "0", f"sleepers survived the timeout: {left.stdout!r}"


def test_output_cap_and_file_limits(project: Path, docker_api) -> None:
    """Output past the cap is flagged truncated; file reads say what they refused and why."""

    async def go():
        limits = SessionLimits(output=64 << 10, read_file=1 << 20)
        async with make(project, timeout="2m", limits=limits) as s:
            big = await s.exec(["head", "-c", "3000000", "/dev/zero"])
            await s.exec(["sh", "-c", "head -c 2000000 /dev/zero > big; mkdir -p adir"])
            with pytest.raises(SessionLimitError, match="more than the limit of 1048576 bytes") as err:
                await s.read_file("big")
            with pytest.raises(FileNotFoundError):
                await s.read_file("missing.txt")
            with pytest.raises(IsADirectoryError):
                await s.read_file("adir")
            with pytest.raises(PermissionError):
                await s.write_file("/etc/not-here", "x")  # read-only root under untrusted
            with pytest.raises(UnicodeDecodeError):
                await s.write_file("bin", b"\xff\xfe")
                await s.read_file("bin")
            return big, err.value

    big, err = asyncio.run(go())
    assert len(big.stdout_bytes) == 64 << 10 and big.stdout_truncated and big.exit_code == 0
    assert err.limit == 1 << 20


def test_stream_delivers_output_while_it_runs(project: Path, docker_api) -> None:
    """exec_stream yields the first line before the command has finished, then the exit event."""

    async def go():
        async with make(project, timeout="2m") as s:
            seen = []
            t0 = time.monotonic()
            async for event in s.exec_stream(["sh", "-c", "echo one; sleep 1.5; echo two >&2; exit 3"]):
                seen.append((time.monotonic() - t0, event))
            return seen

    seen = asyncio.run(go())
    kinds = [(e.kind, e.data) for _, e in seen]
    assert kinds[:2] == [("stdout", b"one\n"), ("stderr", b"two\n")]
    assert seen[-1][1].kind == "exit" and seen[-1][1].exit_code == 3
    assert seen[0][0] < seen[1][0] - 1.0, "the first chunk came only with the end"


def test_session_deadline_ends_the_session(project: Path, docker_api) -> None:
    """Past the session's deadline its container is killed (timed_out) and exec says the session ended."""

    async def go():
        async with make(project, timeout=2) as s:
            await s.exec(["true"])
            await asyncio.sleep(4)
            with pytest.raises(SessionError, match="timed_out"):
                await s.exec(["true"])
            return s

    s = asyncio.run(go())
    assert read_metadata(s.run_dir).status == RunStatus.TIMED_OUT
    assert not labelled(docker_api, s.run_id)


def test_cancelled_task_cancels_the_session(project: Path, docker_api) -> None:
    """Cancelling the task that holds a session mid-exec kills and removes its container: cancelled."""
    holder: list[Session] = []

    async def use():
        async with make(project, timeout="2m") as s:
            holder.append(s)
            await s.exec(["sleep", "60"])

    async def go():
        task = asyncio.create_task(use())
        while not holder or holder[0].container_id is None:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert read_metadata(holder[0].run_dir).status == RunStatus.CANCELLED
    assert not labelled(docker_api, holder[0].run_id)


OWNER_SCRIPT = """
import sys, time
from dad_sandbox.sync import SyncSession
with SyncSession(timeout=float(sys.argv[2]), project_root=sys.argv[1], run_root=sys.argv[1] + "/runs") as s:
    s.exec(["true"])
    print(s.run_id, flush=True)
    time.sleep(600)
"""


def test_orphaned_session_is_recovered_under_its_deadline(project: Path, docker_api) -> None:
    """A session whose owning process was SIGKILLed is re-attached by recovery and ends at its deadline."""
    proc = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, str(project), "6"], stdout=subprocess.PIPE, text=True)
    try:
        run_id = proc.stdout.readline().strip()
        assert run_id.startswith("session_run_")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    run_dir = project / "runs" / run_id
    assert labelled(docker_api, run_id), "the killed owner's container should still be there to recover"

    async def recover():
        async with Supervisor(project_root=project, run_root=project / "runs", recover_on_start=False) as sup:
            return await sup.recover(wait=True)

    found = asyncio.run(recover())
    mine = [o for o in found if o.run_id == run_id]
    assert mine and mine[0].action in (OrphanAction.REATTACHED, OrphanAction.FINALIZED)
    wait_for_status(run_dir, RunStatus.TIMED_OUT, timeout=30)
    assert not labelled(docker_api, run_id)


def test_sync_session(project: Path, docker_api) -> None:
    """SyncSession offers exec, files and streaming without an event loop."""
    with SyncSession(project_root=project, run_root=project / "runs", timeout="1m") as s:
        s.write_file("x.txt", "forty-two")
        assert s.exec(["cat", "x.txt"]).stdout == "forty-two"
        assert s.read_file("x.txt") == "forty-two"
        events = list(s.exec_stream(["echo", "hi"]))
    assert [(e.kind, e.data) for e in events] == [("stdout", b"hi\n"), ("exit", b"")]
    assert s.result is not None and s.result.status == RunStatus.COMPLETED


def test_exec_runs_as_the_run_user_without_capabilities(project: Path) -> None:
    """An exec runs as the policy's user with no capability, although dad-init (PID 1) is root."""
    import os

    from dad_sandbox import Session

    async def go():
        async with Session(policy="untrusted", project_root=project, run_root=project.parent / "runs") as s:
            return await s.exec(["sh", "-c", "id -u; grep -E '^Cap(Eff|Prm|Inh|Amb)' /proc/self/status; kill -9 1; echo $?"])

    result = asyncio.run(go())
    lines = result.stdout.split()
    expected_uid = "65534" if os.getuid() == 0 else str(os.getuid())
    assert lines[0] == expected_uid, result.stdout
    caps = dict(zip(lines[1:9:2], lines[2:9:2], strict=True))
    assert set(caps.values()) == {"0000000000000000"}, caps
    assert lines[-1] != "0", "an exec could kill the container's init"
