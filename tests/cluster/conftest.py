"""Fixtures for the Swarm engine's tests on a real local cluster (``make cluster`` / ``make test-cluster``).

The cluster is found through its state file (``scripts/cluster.sh``): ``$DAD_CLUSTER_ENV``, or
``/var/tmp/dad-cluster/<name>/cluster.env`` with the name ``make cluster`` uses (``$DAD_CLUSTER_NAME``
or this checkout's folder name). Without one these tests are skipped on a laptop and fail under
``CI=true``. Every test works in its own folder under the cluster's shared directory (mounted at
the same path in every node) and must leave no run service behind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dad_sandbox import load_policy
from dad_sandbox.sandbox._policy import Policy, runner_tag
from dad_sandbox.sandbox.engine._swarm import SwarmEngine
from tests._support import mark_folder, skip_or_fail
from tests.conftest import COMPONENTS

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(items, __file__, pytest.mark.cluster)


@dataclass(frozen=True)
class Cluster:
    """A running local Swarm made by scripts/cluster.sh."""

    name: str
    manager: str
    nodes: tuple[str, ...]
    shared: Path

    def container(self, node: str) -> str:
        return f"dad-cluster-{self.name}-{node}"


def _env_file() -> Path:
    given = os.environ.get("DAD_CLUSTER_ENV")
    if given:
        return Path(given)
    name = os.environ.get("DAD_CLUSTER_NAME") or re.sub(r"[^a-z0-9\n]", "-", REPO.name)[:21]
    return Path(os.environ.get("DAD_CLUSTER_STATE", "/var/tmp/dad-cluster")) / name / "cluster.env"


def _unavailable(reason: str) -> None:
    skip_or_fail(reason, must_run="the cluster tests must run; 'make test-cluster' stands the cluster up")


def default_routes(cluster: Cluster, node: str) -> str:
    """The node's default routes (v4 and v6), read inside the node: must be empty."""
    out = subprocess.run(
        ["docker", "exec", cluster.container(node), "sh", "-c", "ip -4 route show default; ip -6 route show default"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return out.stdout.strip()


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    path = _env_file()
    if not path.is_file():
        _unavailable(f"no local cluster ({path} is missing): run 'make cluster' or 'make test-cluster'")
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    if values.get("DAD_CLUSTER_MODE") != "swarm" or not values.get("DAD_CLUSTER_SHARED"):
        _unavailable(f"{path} is not a Swarm with a shared directory")
    found = Cluster(values["DAD_CLUSTER_NAME"], values["DAD_CLUSTER_MANAGER"],
                    tuple(values["DAD_CLUSTER_NODES"].split()), Path(values["DAD_CLUSTER_SHARED"]))
    # Network safety: a node that could reach anything beyond its private network stops the tests.
    for node in found.nodes:
        routes = default_routes(found, node)
        if routes:
            pytest.exit(f"cluster node {node} has a default route ({routes}): refusing to run anything on it", 3)
    return found


@pytest.fixture(scope="session")
def engine(cluster: Cluster) -> Iterator[SwarmEngine]:
    eng = SwarmEngine(base_url=cluster.manager)
    try:
        eng.api.ping()
        eng.api.inspect_image(f"dad-sandbox-runner:{runner_tag()}")
    except Exception as exc:
        _unavailable(f"the cluster's manager does not answer or lacks the runner image: {exc}")
    yield eng
    if eng._api is not None:
        eng._api.close()


@pytest.fixture
def swarm_policy() -> Policy:
    """The untrusted policy as a Swarm service can carry it (the node's seccomp profile) and placed."""
    return load_policy("untrusted").with_overrides(seccomp="docker-default", placement=["node.labels.sandbox==true"])


@pytest.fixture
def workdir(cluster: Cluster, engine: SwarmEngine) -> Iterator[Path]:
    """A folder of this test under the shared dir, with a project holding ``sbx_components``.

    After the test: no run service of this folder may be left on the cluster (they are removed).
    """
    base = cluster.shared / f"t-{uuid.uuid4().hex[:10]}"
    pkg = base / "project" / "sbx_components"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "flows.py").write_text(COMPONENTS)
    for folder in (base, base / "project", pkg):
        folder.chmod(0o755)
    yield base
    left = services_under(engine, base)
    for service in left:
        engine.api.remove_service(service["ID"])
    shutil.rmtree(base, ignore_errors=True)
    assert not left, f"run services left behind: {[s['Spec']['Name'] for s in left]}"


def services_under(engine: SwarmEngine, base: Path) -> list[dict]:
    prefix = str(base).rstrip("/") + "/"
    return [s for s in engine.api.services(filters={"label": "dad.run_id"})
            if (s["Spec"].get("Labels") or {}).get("dad.run_dir", "").startswith(prefix)]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.25) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
