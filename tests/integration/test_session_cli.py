"""``dad-sandbox session start|exec|cp|stop|ls`` against real containers, through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dad_sandbox.run import RunStatus, read_metadata

from .conftest import labelled, wait_for_status

CLI = [sys.executable, "-m", "dad_sandbox.cli"]


@pytest.fixture
def sessions(project: Path, docker_api) -> Iterator[dict]:
    """A private session dir for this test (short: socket paths are limited), and clean-up of what it started."""
    directory = Path(tempfile.mkdtemp(prefix="dss-", dir="/tmp"))
    started: list[dict] = []
    env = dict(os.environ, DAD_SANDBOX_SESSION_DIR=str(directory))
    yield {"dir": directory, "env": env, "started": started, "project": project}
    for info in started:  # a test that failed half-way: end its session server (it cancels the session)
        try:
            os.kill(info["pid"], signal.SIGTERM)
        except ProcessLookupError:
            continue
        wait_gone(info["pid"])
    assert labelled(docker_api, under=project) == set(), "a session left its container"
    shutil.rmtree(directory, ignore_errors=True)


def cli(ctx: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "session", *args], cwd=ctx["project"], env=ctx["env"], capture_output=True,
                          text=True, timeout=180)


def start(ctx: dict, *args: str) -> dict:
    res = cli(ctx, "start", "--json", *args)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    ctx["started"].append(info)
    return info


def wait_gone(pid: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"session server {pid} still runs after {timeout}s")


def test_start_exec_cp_stop(sessions: dict, docker_api) -> None:
    """A session outlives each command: exec keeps state, cp goes both ways, stop ends it completed."""
    info = start(sessions, "--timeout", "5m")
    sid = info["session_id"]
    assert (sessions["dir"].stat().st_mode & 0o777) == 0o700
    assert (Path(info["socket"]).stat().st_mode & 0o777) == 0o600
    assert len(labelled(docker_api, sid)) == 1

    ran = cli(sessions, "exec", sid, "--", "sh", "-c", "echo out; echo err >&2; echo state > kept.txt; exit 3")
    assert (ran.returncode, ran.stdout, ran.stderr) == (3, "out\n", "err\n")
    again = cli(sessions, "exec", "--json", sid, "--", "cat", "kept.txt")
    assert again.returncode == 0 and json.loads(again.stdout)["stdout"] == "state\n"

    host = sessions["project"] / "in.bin"
    host.write_bytes(bytes(range(256)) * 10)
    assert cli(sessions, "cp", str(host), f"{sid}:sub/in.bin").returncode == 0
    back = sessions["project"] / "back.bin"
    copied = cli(sessions, "cp", "--json", f"{sid}:sub/in.bin", str(back))
    assert copied.returncode == 0 and json.loads(copied.stdout)["bytes"] == 2560
    assert back.read_bytes() == host.read_bytes()

    listed = cli(sessions, "ls", "--json")
    assert [row["session_id"] for row in json.loads(listed.stdout)] == [sid]

    stopped = cli(sessions, "stop", "--json", sid)
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["status"] == "completed"
    wait_gone(info["pid"])
    assert read_metadata(Path(info["run_dir"])).status == RunStatus.COMPLETED
    assert labelled(docker_api, sid) == set() and not Path(info["socket"]).exists()


def test_errors_are_one_line_with_exit_codes(sessions: dict) -> None:
    """Unknown ids exit 7, a bad cp exits 2, a missing file in the session exits 7 with its kind."""
    unknown = cli(sessions, "exec", "--json", "session_run_nope", "--", "true")
    assert unknown.returncode == 7 and json.loads(unknown.stdout)["kind"] == "unknown_session"
    assert len(unknown.stderr.strip().splitlines()) == 1
    assert cli(sessions, "stop", "session_run_nope").returncode == 7
    assert cli(sessions, "cp", "a.txt", "b.txt").returncode == 2

    info = start(sessions)
    missing = cli(sessions, "cp", "--json", f"{info['session_id']}:no/such/file", "out.txt")
    assert missing.returncode == 7 and json.loads(missing.stdout)["kind"] == "not_found"
    assert cli(sessions, "stop", info["session_id"]).returncode == 0
    wait_gone(info["pid"])


def test_deadline_ends_the_server(sessions: dict, docker_api) -> None:
    """Past the session's deadline the run ends timed_out, the server exits and its socket is gone."""
    info = start(sessions, "--timeout", "3s")
    wait_gone(info["pid"], timeout=90)
    wait_for_status(Path(info["run_dir"]), RunStatus.TIMED_OUT)
    assert not Path(info["socket"]).exists() and labelled(docker_api, info["session_id"]) == set()
    gone = cli(sessions, "exec", info["session_id"], "--", "true")
    assert gone.returncode == 7


def test_sigterm_cancels_the_session(sessions: dict, docker_api) -> None:
    """SIGTERM to the session server cancels the session: status cancelled, container removed."""
    info = start(sessions)
    os.kill(info["pid"], signal.SIGTERM)
    wait_gone(info["pid"])
    assert read_metadata(Path(info["run_dir"])).status == RunStatus.CANCELLED
    assert labelled(docker_api, info["session_id"]) == set()


def test_start_failure_is_one_line(sessions: dict) -> None:
    """A policy that does not exist fails start with exit 7 and no server left behind."""
    res = cli(sessions, "start", "--policy", "no-such-policy")
    assert res.returncode == 7 and res.stderr.startswith("error:") and len(res.stderr.strip().splitlines()) == 1
    assert not list(sessions["dir"].glob("*.sock"))
