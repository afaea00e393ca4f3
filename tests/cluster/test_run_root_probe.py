"""The run-root probe on a real Swarm: every node must see the run root at the same path before a run.

A folder under the cluster's shared directory is mounted in every node; a folder elsewhere on the
host is in none of them, so every node must be reported failing and a run there must end
``crashed (engine_error)`` before any run service exists, leaving no probe service or folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dad_sandbox import IsolatedExecution, RunContext, RunStatus
from dad_sandbox.run import read_metadata
from dad_sandbox.sandbox._policy import Policy, runner_tag
from dad_sandbox.sandbox.engine._swarm import RunRootNotShared, SwarmEngine
from dad_sandbox.sandbox.engine._swarm_probe import PROBE_LABEL, probe_run_root

from .conftest import Cluster, services_under

IMAGE = f"dad-sandbox-runner:{runner_tag()}"


@pytest.fixture
def unshared(workdir: Path) -> Iterator[Path]:
    """A host folder that no node mounts (the project stays under the shared dir)."""
    folder = Path("/var/tmp") / f"dad-unshared-{uuid.uuid4().hex[:10]}"
    folder.mkdir(mode=0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def probe_services(engine: SwarmEngine) -> list[dict]:
    mine = f"{os.uname().nodename}:{os.getpid()}"
    return [s for s in engine.api.services(filters={"label": PROBE_LABEL})
            if (s["Spec"].get("Labels") or {}).get("dad.supervisor") == mine]


def assert_nothing_left(engine: SwarmEngine, root: Path) -> None:
    assert probe_services(engine) == []
    assert [p.name for p in root.iterdir() if p.name.startswith(".dad-probe-")] == []


def test_every_node_sees_the_shared_run_root(cluster: Cluster, engine: SwarmEngine, workdir: Path) -> None:
    root = workdir / "runs"
    views = probe_run_root(engine.api, root, IMAGE)
    assert len(views) == len(cluster.nodes), views
    assert all(v.ok for v in views), views
    assert_nothing_left(engine, root)


def test_no_node_sees_an_unshared_folder(cluster: Cluster, engine: SwarmEngine, unshared: Path) -> None:
    views = probe_run_root(engine.api, unshared, IMAGE)
    assert len(views) == len(cluster.nodes), views
    assert not any(v.ok for v in views), views
    assert all(v.detail.startswith("rejected: ") and "bind source path does not exist" in v.detail for v in views), views
    assert_nothing_left(engine, unshared)


def test_a_run_on_an_unshared_run_root_crashes_before_any_service(
    cluster: Cluster, engine: SwarmEngine, workdir: Path, unshared: Path, swarm_policy: Policy
) -> None:
    ctx = RunContext("exec", workdir / "project", run_root=unshared)
    ctx.setup_run()

    async def go():
        async with IsolatedExecution(ctx, swarm_policy, engine=engine) as execution:
            return await execution.run_command(["true"])

    with pytest.raises(RunRootNotShared):
        asyncio.run(go())
    meta = read_metadata(ctx.run_dir)
    assert (meta.status, meta.reason) == (RunStatus.CRASHED, "engine_error"), meta.error
    assert "do not see the run root" in (meta.error or "") and "Mount the shared storage" in (meta.error or "")
    assert services_under(engine, workdir) == []
    assert not [s for s in engine.api.services(filters={"label": "dad.run_id"})
                if (s["Spec"].get("Labels") or {}).get("dad.run_dir", "").startswith(str(unshared))]
    assert_nothing_left(engine, unshared)


def test_doctor_reports_each_node(cluster: Cluster, workdir: Path, unshared: Path) -> None:
    env = {**os.environ, "DAD_SANDBOX_ENGINE": "swarm", "DOCKER_HOST": cluster.manager}

    def doctor(root: Path) -> dict[str, dict]:
        out = subprocess.run([sys.executable, "-m", "dad_sandbox.cli", "doctor", "--run-root", str(root), "--json"],
                             env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
        return {c["name"]: c for c in json.loads(out.stdout) if c["name"].startswith("node ")}

    good = doctor(workdir / "runs")
    assert len(good) == len(cluster.nodes) and all(c["ok"] for c in good.values()), good
    bad = doctor(unshared)
    assert len(bad) == len(cluster.nodes) and not any(c["ok"] for c in bad.values()), bad
    assert all(f"mount the shared storage at {unshared}" in c["fix"] for c in bad.values()), bad


def test_gc_removes_a_dead_supervisors_probe_service(engine: SwarmEngine, workdir: Path) -> None:
    """A probe service whose supervisor died (labels name a finished process) is removed by gc."""
    from dad_sandbox import Supervisor

    child = subprocess.Popen(["true"])
    child.wait()
    root = workdir / "runs"
    root.mkdir()
    host = os.uname().nodename
    labels = {PROBE_LABEL: "1", "dad.run_dir": str(root / ".dad-probe-left"), "dad.supervisor": f"{host}:{child.pid}",
              "dad.supervisor.host": host, "dad.supervisor.pid": str(child.pid), "dad.supervisor.start": ""}
    sid = engine.api.create_service(
        name=f"dad-probe-left-{uuid.uuid4().hex[:8]}", labels=labels, mode={"Replicated": {"Replicas": 0}},
        task_template={"ContainerSpec": {"Image": IMAGE, "Args": ["true"], "Labels": labels}},
    )["ID"]
    try:
        async def gc():
            async with Supervisor(engine=engine, project_root=workdir / "project", run_root=root) as sup:
                return await sup.gc()

        found = asyncio.run(gc())
        assert [o.container_id for o in found if o.container_id.startswith("dad-probe-left-")], found
        assert sid not in {s["ID"] for s in engine.api.services(filters={"label": PROBE_LABEL})}
    finally:
        with contextlib.suppress(Exception):
            engine.api.remove_service(sid)
