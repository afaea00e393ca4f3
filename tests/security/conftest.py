"""The red-team suite: hostile agents under the untrusted policy, on runc and on gVisor (runsc).

Each attack asserts (a) the final status and reason, (b) the host is untouched (sentinel files
outside the run dir keep content, owner and mode; the project dir is unchanged), (c) no container
is left, (d) the supervisor keeps serving the next run. Results are written to
``build/security/results-<runtime>.json``; ``make security-doc`` renders them into docs/SECURITY.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._support import IN_CI
from tests.integration.conftest import docker_api, no_leaked_containers  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]
RESULTS: dict[str, list[dict[str, object]]] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.security)


@pytest.fixture(params=["runc", "runsc"])
def runtime(request: pytest.FixtureRequest, docker_api) -> str:
    name = request.param
    if name != "runc" and name not in (docker_api.info().get("Runtimes") or {}):
        msg = f"runtime {name} is not registered with the engine: run 'make engine RUNTIME=runsc'"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return name


@pytest.fixture
def record_result() -> Iterator[list[dict[str, object]]]:
    rows: list[dict[str, object]] = []
    yield rows
    for row in rows:
        RESULTS.setdefault(str(row["runtime"]), []).append(row)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not RESULTS:
        return
    out = REPO / "build" / "security"
    out.mkdir(parents=True, exist_ok=True)
    for runtime, rows in RESULTS.items():
        path = out / f"results-{runtime}.json"
        old = json.loads(path.read_text()) if path.exists() else []
        merged = {r["attack"]: r for r in old} | {r["attack"]: r for r in rows}
        path.write_text(json.dumps(sorted(merged.values(), key=lambda r: str(r["attack"])), indent=2) + "\n")
    os.environ.setdefault("DAD_SECURITY_RESULTS", str(out))
