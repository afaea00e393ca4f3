"""`dad-sandbox exec` starts a resident supervisor on first use, which later execs go through.

Every test here scopes the server to its own socket (DAD_SANDBOX_SOCKET under tmp_path) and stops
whatever it started, so no server outlives the test.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dad_sandbox.run import read_metadata

CLI = [sys.executable, "-m", "dad_sandbox.cli"]
STARTED = "started a resident supervisor"


def _servers_on(sock: Path) -> list[int]:
    """Pids of `serve` processes on this socket (read from /proc: they are not our children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"serve" in argv and str(sock).encode() in argv:
                pids.append(int(entry.name))
    return pids


def _lock_free(sock: Path) -> bool:
    try:
        fd = os.open(f"{sock}.lock", os.O_WRONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _wait(predicate, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def auto_env(project: Path, tmp_path: Path, docker_api) -> Iterator[dict[str, str]]:
    """The environment of a user who set nothing: auto-start on, its socket private to this test."""
    sock = tmp_path / "sockdir" / "sv.sock"
    env = {k: v for k, v in os.environ.items() if k not in ("DAD_SANDBOX_AUTOSTART", "DAD_SANDBOX_NO_SERVER")}
    env["DAD_SANDBOX_SOCKET"] = str(sock)
    yield env
    # stop whatever the test started, also a server still filling its pool (not listening yet)
    _wait(lambda: sock.exists() or _lock_free(sock))
    if sock.exists():
        subprocess.run([*CLI, "serve", "--stop"], cwd=project, env=env, capture_output=True, timeout=90)
    for pid in _servers_on(sock):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    assert _wait(lambda: not _servers_on(sock)), "a resident supervisor outlived its test"


def _exec(project: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "exec", "--json", "--", *argv], cwd=project, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_first_exec_starts_a_server_that_the_next_uses(project: Path, auto_env: dict[str, str]) -> None:
    sock = Path(auto_env["DAD_SANDBOX_SOCKET"])
    first = _exec(project, auto_env, "true")
    assert first.returncode == 0, first.stderr
    assert first.stderr.count(STARTED) == 1 and "serve --stop" in first.stderr
    assert read_metadata(Path(json.loads(first.stdout)["run_dir"])).warm_pool_slot is None  # ran in the CLI itself
    assert _wait(sock.exists), (sock.parent / "sv.sock.log").read_text()
    assert oct(sock.parent.stat().st_mode & 0o777) == "0o700" and oct(sock.stat().st_mode & 0o777) == "0o600"

    second = _exec(project, auto_env, "sh", "-c", "echo via-server; exit 3")
    assert STARTED not in second.stderr
    summary = json.loads(second.stdout)
    assert second.returncode == 1 and summary["exit_code"] == 3
    assert read_metadata(Path(summary["run_dir"])).warm_pool_slot  # a warm container of the resident server

    status = subprocess.run([*CLI, "serve", "--status"], cwd=project, env=auto_env, capture_output=True, text=True,
                            timeout=30)
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert state["project_root"] == str(project) and state["idle_timeout"] == 600 and [state["pid"]] == _servers_on(sock)

    stop = subprocess.run([*CLI, "serve", "--stop"], cwd=project, env=auto_env, capture_output=True, text=True, timeout=90)
    assert stop.returncode == 0, stop.stderr
    assert not sock.exists() and _wait(lambda: not _servers_on(sock))
    assert not list((project / "runs" / ".pool").glob("pool_*"))  # its warm pool was removed
    gone = subprocess.run([*CLI, "serve", "--status"], cwd=project, env=auto_env, capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1 and "no dad-sandbox supervisor" in gone.stderr


def test_concurrent_first_execs_start_exactly_one_server(project: Path, auto_env: dict[str, str]) -> None:
    sock = Path(auto_env["DAD_SANDBOX_SOCKET"])
    procs = [subprocess.Popen([*CLI, "exec", "--json", "--", "true"], cwd=project, env=auto_env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(err.count(STARTED) for _, err in outs) == 1  # said once, by the one that started it
    assert _wait(sock.exists)
    assert len(_servers_on(sock)) == 1


def test_an_idle_server_ends_by_itself(project: Path, auto_env: dict[str, str]) -> None:
    sock = Path(auto_env["DAD_SANDBOX_SOCKET"])
    env = {**auto_env, "DAD_SANDBOX_SERVER_IDLE": "1"}
    assert _exec(project, env, "true").returncode == 0
    assert _wait(lambda: bool(_servers_on(sock)), timeout=10)
    assert _wait(lambda: not _servers_on(sock), timeout=90), "the idle server did not end"
    assert not sock.exists()
    assert not list((project / "runs" / ".pool").glob("pool_*"))


@pytest.mark.parametrize("opt_out", [{"DAD_SANDBOX_AUTOSTART": "0"}, {"DAD_SANDBOX_NO_SERVER": "1"}, {}])
def test_opting_out_starts_no_server(project: Path, auto_env: dict[str, str], opt_out: dict[str, str]) -> None:
    sock = Path(auto_env["DAD_SANDBOX_SOCKET"])
    extra = [] if opt_out else ["--no-server"]
    res = subprocess.run([*CLI, "exec", "--json", *extra, "--", "true"], cwd=project, env={**auto_env, **opt_out},
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    assert STARTED not in res.stderr
    assert not os.path.lexists(f"{sock}.lock") and not _servers_on(sock)
