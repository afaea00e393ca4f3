"""A component named by ``module:attribute`` is imported only in its container, never on the host.

The module under test writes a marker file at import time to a host folder that is not mounted
into the container; if dad-sandbox imported it on the host, the marker would appear.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dad_sandbox import RunStatus, Supervisor
from dad_sandbox.run import read_metadata
from dad_sandbox.sync import SyncSupervisor, run_component

CLI = [sys.executable, "-m", "dad_sandbox.cli"]
REFERENCE = "sbx_marker.agent:marked"


@pytest.fixture
def marker(project: Path, tmp_path: Path) -> Path:
    """A component module in ``project`` whose top level appends to a host file outside the project."""
    host_dir = tmp_path / "host_only"
    host_dir.mkdir()
    path = host_dir / "imported.txt"
    pkg = project / "sbx_marker"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "agent.py").write_text(textwrap.dedent(f'''
        import os
        from dad_sandbox import AgentDefinition, FlowDefinition

        try:  # on the host this path exists; in the container it is not mounted
            with open({str(path)!r}, "a") as fh:
                fh.write(f"imported by uid {{os.getuid()}}\\n")
        except OSError:
            pass

        def step(ctx):
            return "ran"

        marked = AgentDefinition("marked", flows=[FlowDefinition("main").node("step", step)])
    '''))
    sys.modules.pop("sbx_marker", None)
    sys.modules.pop("sbx_marker.agent", None)
    yield path
    sys.modules.pop("sbx_marker", None)
    sys.modules.pop("sbx_marker.agent", None)


def _assert_not_imported(marker: Path) -> None:
    assert not marker.exists(), f"the component was imported on the host: {marker.read_text()!r}"
    assert "sbx_marker.agent" not in sys.modules


def test_cli_run_and_rerun_never_import_on_the_host(project: Path, marker: Path) -> None:
    """`dad-sandbox run` and `rerun` complete the component without importing it on the host."""
    first = subprocess.run([*CLI, "run", REFERENCE, "--json"], cwd=project, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert [n["output"] for n in summary["nodes"]] == ["ran"]
    assert read_metadata(Path(summary["run_dir"])).root_component_id == "marked"  # the id the container reported
    again = subprocess.run([*CLI, "rerun", summary["run_id"], "--from", "marked.main.step", "--json"], cwd=project,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "completed"
    _assert_not_imported(marker)


def test_python_entry_points_never_import_on_the_host(project: Path, marker: Path) -> None:
    """sync.run_component, Supervisor.submit(component=...) and SyncSupervisor.submit run it without a host import."""
    result = run_component(REFERENCE, project_root=project, run_root=project / "runs")
    assert result.status == RunStatus.COMPLETED, result.error

    async def submitted():
        async with Supervisor(project_root=project, run_root=project / "runs", recover_on_start=False) as sup:
            return await sup.submit(component=REFERENCE).wait()

    assert asyncio.run(submitted()).status == RunStatus.COMPLETED
    with SyncSupervisor(project_root=project, run_root=project / "runs", recover_on_start=False) as sup:
        assert sup.submit(component=REFERENCE).wait(timeout=120).status == RunStatus.COMPLETED
    rerun = run_component(REFERENCE, project_root=project, run_root=project / "runs", previous_run_id=result.run_id,
                          start_hierarchy_path="marked.main.step")
    assert rerun.status == RunStatus.COMPLETED, rerun.error
    _assert_not_imported(marker)


def test_sync_facade_leaves_sys_path_alone(project: Path, marker: Path) -> None:
    """run_component does not add the project root to this process's sys.path."""
    before = list(sys.path)
    run_component(REFERENCE, project_root=project, run_root=project / "runs")
    assert sys.path == before
    _assert_not_imported(marker)
    importlib.import_module("sbx_marker.agent")  # control: a host import WOULD leave the marker
    assert marker.read_text().startswith("imported by uid")
