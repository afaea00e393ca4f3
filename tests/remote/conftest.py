"""A second Docker engine with a filesystem of its own, for copy mode (issue 17, remote engines).

The engine is a dockerd running in a container (``images/node``, stood up by
``scripts/cluster.sh up --standalone``), reached through a unix socket on a host path. It sees
nothing of the host's files, exactly like a ``tcp://`` or ``ssh://`` engine on another machine.

Without what it needs (root, a local Docker engine, the runner image) the suite is skipped on a
laptop and fails under ``CI=true``. Every test checks that it left no container or volume of its
runs on that engine.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support import mark_folder, skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "scripts" / "cluster.sh"
#: standing the node up takes ~3 s; building its image the first time ~100 s
UP_TIMEOUT = 600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(items, __file__, pytest.mark.integration)


def _unavailable(reason: str) -> None:
    skip_or_fail(reason, must_run="the remote-engine tests must run")


@pytest.fixture(scope="session")
def remote_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``unix://`` URL of a fresh standalone engine in a container; torn down after the session."""
    if os.geteuid() != 0:
        _unavailable("the remote-engine tests need root (they start a dockerd in a container)")
    if not (ROOT / "build" / "runner-tag").exists():
        _unavailable("no runner image for this checkout: run 'make image'")
    name = f"rt-{secrets.token_hex(4)}"
    state = tmp_path_factory.mktemp("cluster-state")
    env = {**os.environ, "DAD_CLUSTER_STATE": str(state)}
    up = subprocess.run(["bash", str(CLUSTER), "up", "--name", name, "--standalone"], cwd=ROOT, env=env,
                        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=UP_TIMEOUT, check=False)
    try:
        if up.returncode != 0:
            _unavailable(f"could not stand up a second engine: {up.stderr.strip()[-600:]}")
        yield f"unix://{state}/{name}/nodes/node-1/docker.sock"
    finally:
        subprocess.run(["bash", str(CLUSTER), "down", "--name", name], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def remote_api(remote_url: str) -> Iterator[object]:
    import docker

    api = docker.APIClient(base_url=remote_url, version="auto", timeout=30)
    yield api
    api.close()


@pytest.fixture(autouse=True)
def nothing_left_on_the_remote(remote_api) -> Iterator[None]:
    """Containers, loaders, probes and volumes of a test's runs are all gone after it."""
    yield
    containers = remote_api.containers(all=True)
    volumes = remote_api.volumes(filters={"label": "dad.run_id"}).get("Volumes") or []
    for c in containers:
        remote_api.remove_container(c["Id"], force=True)
    for v in volumes:
        remote_api.remove_volume(v["Name"], force=True)
    assert not containers, f"containers left on the remote engine: {[c.get('Labels') for c in containers]}"
    assert not volumes, f"volumes left on the remote engine: {[v['Name'] for v in volumes]}"
