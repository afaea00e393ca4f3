"""RunContext: set-up, static inputs, completion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from dad_sandbox.errors import RerunTargetError, RunError, RunSetupError, StaticInputsError
from dad_sandbox.run import RunContext, RunStatus, read_metadata


class NodeIn(BaseModel):
    param1: str
    param2: int = 0


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    c = RunContext(root_component_id="my_agent", project_root=tmp_path, run_root=tmp_path / "runs")
    c.setup_run(run_id_prefix="test")
    return c


def test_setup_creates_the_layout(ctx: RunContext, tmp_path: Path) -> None:
    """setup_run() makes the run dir, the .trace files, static_inputs/ and initialized metadata."""
    run_dir = ctx.run_dir
    assert run_dir.parent == tmp_path / "runs"
    assert ctx.run_id.startswith("test_run_")
    for name in ("trace.jsonl", "metrics.jsonl", "logs.jsonl", "dad_metadata.json"):
        assert (run_dir / ".trace" / name).is_file()
    assert (run_dir / "static_inputs").is_dir()
    md = read_metadata(run_dir)
    assert md.status == RunStatus.INITIALIZED
    assert md.run_id == ctx.run_id
    env = ctx.run_env_params
    assert (env.run_dir, env.trace_dir) == (run_dir, run_dir / ".trace")
    assert env.outcome_repo_dir == tmp_path / "runs" / "outcome" / tmp_path.name


def test_default_run_root_is_project_runs(tmp_path: Path) -> None:
    """Without run_root, runs go under <project_root>/runs."""
    c = RunContext("a", tmp_path)
    c.setup_run()
    assert c.run_dir.parent == tmp_path / "runs"


def test_setup_twice_is_refused(ctx: RunContext) -> None:
    """One context holds one run."""
    with pytest.raises(RunSetupError, match="already"):
        ctx.setup_run()


def test_bad_root_component_id(tmp_path: Path) -> None:
    """Ids that cannot be a folder name are refused with the id named."""
    with pytest.raises(RunError, match="a.b"):
        RunContext("a.b", tmp_path)


def test_complete_run_persists_error_msg(ctx: RunContext) -> None:
    """complete_run(failed, error_msg) keeps the message on disk (upstream dropped it)."""
    ctx.complete_run(status="failed", error_msg="it broke")
    md = read_metadata(ctx.run_dir)
    assert md.status == RunStatus.FAILED
    assert md.error == "it broke"
    assert md.completed_at is not None and md.duration_seconds is not None


def test_complete_run_is_idempotent(ctx: RunContext) -> None:
    """Calling complete_run twice with the same values changes nothing."""
    first = ctx.complete_run(status="failed", error_msg="x")
    second = ctx.complete_run(status="failed", error_msg="x")
    assert (first.status, first.error, first.completed_at) == (second.status, second.error, second.completed_at)


def test_complete_run_never_overrides_supervisor_status(ctx: RunContext) -> None:
    """A timed_out written by the supervisor stays timed_out; the message is added."""
    ctx.record(status=RunStatus.TIMED_OUT, reason="deadline", error="deadline passed")
    ctx.complete_run(status="completed")
    ctx.complete_run(status="failed", error_msg="caller noticed")
    md = read_metadata(ctx.run_dir)
    assert md.status == RunStatus.TIMED_OUT
    assert md.reason == "deadline"
    assert "deadline passed" in md.error and "caller noticed" in md.error


@pytest.mark.parametrize("status", ["running", "initialized", "bogus"])
def test_complete_run_needs_terminal_status(ctx: RunContext, status: str) -> None:
    """Only terminal statuses complete a run."""
    with pytest.raises(RunError):
        ctx.complete_run(status=status)


def test_missing_previous_run_is_an_error(tmp_path: Path) -> None:
    """A previous_run_id whose directory does not exist fails; it is never a silent fresh run."""
    c = RunContext("a", tmp_path, previous_run_id="run_20260101_000000_abcdef")
    with pytest.raises(RerunTargetError, match="not found"):
        c.setup_run()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_rerun_gets_rerun_id_and_info(ctx: RunContext, tmp_path: Path) -> None:
    """A re-run of an existing run gets a rerun_ id and records what it re-runs."""
    re = RunContext("my_agent", tmp_path, run_root=tmp_path / "runs", previous_run_id=ctx.run_id,
                    start_hierarchy_path="my_agent.flow.node")
    re.setup_run()
    assert re.run_id.startswith("rerun_")
    md = read_metadata(re.run_dir)
    assert md.rerun is not None and md.rerun.previous_run_id == ctx.run_id


def test_start_path_without_previous_run(tmp_path: Path) -> None:
    """A start path without a previous run is a mistake worth saying."""
    with pytest.raises(RerunTargetError):
        RunContext("a", tmp_path, start_hierarchy_path="a.b")


def test_static_inputs_from_json_validate_into_model(ctx: RunContext) -> None:
    """Values read from static_inputs.json become real model instances (upstream failed here)."""
    ctx.layout.static_inputs_file.write_text(json.dumps({"my_node_id": {"param1": "v", "param2": 3}}))
    ctx.read_static_inputs()
    value = ctx.static_inputs.get("my_node_id", NodeIn)
    assert isinstance(value, NodeIn) and value.param2 == 3


def test_registered_input_is_saved_and_wins(ctx: RunContext) -> None:
    """A value registered in code is written to static_inputs.json and wins over the file."""
    ctx.register_node_static_input("my_node_id", NodeIn(param1="code"))
    saved = json.loads(ctx.layout.static_inputs_file.read_text())
    assert saved["my_node_id"]["param1"] == "code"
    ctx.layout.static_inputs_file.write_text(json.dumps({"my_node_id": {"param1": "file"}, "other": {"param1": "o"}}))
    values = ctx.read_static_inputs()
    assert values["my_node_id"]["param1"] == "code"
    assert values["other"]["param1"] == "o"


def test_hierarchy_path_beats_bare_id(ctx: RunContext) -> None:
    """A value keyed by full hierarchy path is chosen over one keyed by bare node id."""
    ctx.register_node_static_input("n", {"param1": "bare"})
    ctx.register_node_static_input("a.f.n", {"param1": "full"})
    assert ctx.static_inputs.get("n", NodeIn, "a.f.n").param1 == "full"
    assert ctx.static_inputs.get("n", NodeIn, "a.g.n").param1 == "bare"


def test_static_input_mismatch_names_node(ctx: RunContext) -> None:
    """A value that does not fit the model fails with the node and model named."""
    ctx.register_node_static_input("n", {"param2": "not a number"})
    with pytest.raises(StaticInputsError, match=r"'n'.*NodeIn"):
        ctx.static_inputs.get("n", NodeIn)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"n": 5}'])
def test_bad_static_inputs_file(ctx: RunContext, content: str) -> None:
    """A malformed static_inputs.json is an error, never silently ignored."""
    ctx.layout.static_inputs_file.write_text(content)
    with pytest.raises(StaticInputsError):
        ctx.read_static_inputs()
