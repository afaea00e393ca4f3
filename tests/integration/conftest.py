"""Integration fixtures: a real Docker engine, the runner image, and a leak check after each test.

Without an engine these tests are skipped on a laptop, but under ``CI=true`` a missing engine or
image is a failure, never a skip.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dad_sandbox.run import RunStatus, read_metadata
from dad_sandbox.sandbox._policy import runner_tag
from tests._support import mark_folder, skip_or_fail

IMAGE = f"dad-sandbox-runner:{runner_tag()}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(items, __file__, pytest.mark.integration)


def _unavailable(reason: str) -> None:
    skip_or_fail(reason, must_run="integration tests must run; 'make test' provisions the engine and image")


@pytest.fixture(scope="session")
def docker_api():
    import docker
    from docker.utils import kwargs_from_env

    try:
        # DOCKER_HOST as dad-sandbox itself reads it: `make test-podman` points it at Podman
        api = docker.APIClient(version="auto", timeout=10, **kwargs_from_env())
        api.ping()
    except Exception as exc:
        _unavailable(f"no Docker engine answers: {exc}")
    try:
        api.inspect_image(IMAGE)
    except Exception:
        _unavailable(f"image {IMAGE} is missing: run 'make image'")
    yield api
    api.close()


def labelled(api, run_id: str | None = None, *, under: Path | None = None) -> set[str]:
    """Ids of dad-sandbox containers: of one run, or of runs whose run dir is ``under`` a folder.

    Why ``under``: other dad-sandbox runs (a user's, another checkout's tests) may share the
    engine; a test counts and cleans only what it made, i.e. runs below its own temp folders.
    With ``under`` every container naming a run dir there counts, run or not: the bind-or-copy
    probe and copy-mode loaders carry ``dad.run_dir`` but no run id, and must not leak either.
    """
    selector = f"dad.run_id={run_id}" if run_id else ("dad.run_dir" if under is not None else "dad.run_id")
    found = api.containers(all=True, filters={"label": selector})
    if under is not None:
        prefix = str(under).rstrip("/") + "/"
        found = [c for c in found if (c.get("Labels") or {}).get("dad.run_dir", "").startswith(prefix)]
    return {c["Id"] for c in found}


def container_exists(api, container_id: str | None) -> bool:
    """Whether a container with this id is still on the engine (running or not)."""
    return bool(container_id) and bool(api.containers(all=True, filters={"id": container_id}))


@pytest.fixture(autouse=True)
def no_leaked_containers(docker_api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every integration test must leave no container of its own runs behind."""
    mine = tmp_path_factory.getbasetemp()
    before = labelled(docker_api, under=mine)
    yield
    leaked = labelled(docker_api, under=mine) - before
    for cid in leaked:
        docker_api.remove_container(cid, force=True)
    assert not leaked, f"{len(leaked)} container(s) labelled dad.run_id were left behind"


def wait_for_status(run_dir: Path, status: RunStatus, timeout: float = 30.0) -> None:
    """Poll dad_metadata.json until the run reaches ``status``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if read_metadata(run_dir).status == status:
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{run_dir} did not reach {status} within {timeout}s")
