"""`dad-sandbox serve`: a resident supervisor that `dad-sandbox exec` runs through."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dad_sandbox.run import RunStatus, read_metadata

from .conftest import container_exists, wait_for_status

CLI = [sys.executable, "-m", "dad_sandbox.cli"]


@pytest.fixture
def server(project: Path, tmp_path: Path, docker_api):
    sock = tmp_path / "sock" / "supervisor.sock"
    env = {**os.environ, "DAD_SANDBOX_SOCKET": str(sock)}
    proc = subprocess.Popen([*CLI, "serve", "--warm-pool", "untrusted=1"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 60
    while time.monotonic() < end and not sock.exists():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    yield env
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()
    assert not sock.exists()
    assert not list((project / "runs" / ".pool").glob("pool_*"))


def test_exec_runs_through_the_server(project: Path, server: dict[str, str]) -> None:
    """exec uses the resident supervisor (a warm-pool container) and keeps its output and exit codes."""
    res = subprocess.run([*CLI, "exec", "--", "python3", "-c", "print('hello via serve')"], cwd=project, env=server,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "hello via serve" in res.stdout
    run_id = next(line.split()[1] for line in res.stderr.splitlines() if line.startswith("run "))
    md = read_metadata(project / "runs" / run_id)
    assert md.status == "completed" and md.warm_pool_slot
    bad = subprocess.run([*CLI, "exec", "--json", "--", "sh", "-c", "exit 5"], cwd=project, env=server,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and json.loads(bad.stdout)["exit_code"] == 5


def test_other_project_falls_back_to_in_process(project: Path, server: dict[str, str], tmp_path: Path) -> None:
    """A server for another project is not used: exec runs in-process instead, and still works."""
    other = tmp_path / "other"
    other.mkdir()
    res = subprocess.run([*CLI, "exec", "--json", "--", "true"], cwd=other, env=server, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    md = read_metadata(Path(json.loads(res.stdout)["run_dir"]))
    assert md.warm_pool_slot is None and md.supervisor["pid"] != os.getpid()


def test_client_interrupt_cancels_the_served_run(project: Path, server: dict[str, str], docker_api) -> None:
    """Ctrl-C on the client cancels the run in the server and leaves no container."""
    proc = subprocess.Popen([*CLI, "exec", "--", "sleep", "60"], cwd=project, env=server, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    runs = project / "runs"
    end = time.monotonic() + 30
    run_dir = None
    while time.monotonic() < end and run_dir is None:
        candidates = [d for d in runs.glob("run_*") if (d / ".trace" / "dad_metadata.json").exists()]
        run_dir = candidates[0] if candidates else None
        time.sleep(0.05)
    assert run_dir is not None
    wait_for_status(run_dir, RunStatus.RUNNING)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 6 and "cancelled" in err
    wait_for_status(run_dir, RunStatus.CANCELLED)
    cid = read_metadata(run_dir).container_id
    end = time.monotonic() + 20
    while time.monotonic() < end and container_exists(docker_api, cid):
        time.sleep(0.1)
    assert cid and not container_exists(docker_api, cid)
