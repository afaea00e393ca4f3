"""Validation before work, re-runs that reproduce the run they continue, and replay - through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dad_sandbox.run import read_metadata
from dad_sandbox.run._metadata import write_metadata

CLI = [sys.executable, "-m", "dad_sandbox.cli"]

FLOWS = textwrap.dedent('''
    import os
    from pydantic import BaseModel
    from dad_sandbox import FlowDefinition

    class Base(BaseModel):
        n: int

    class Values(BaseModel):
        values: list[int]

    class Score(BaseModel):
        fail: bool = False

    def mark(ctx):
        with open(os.path.join(os.environ["DAD_RUN_DIR"], "executed.log"), "a") as fh:
            fh.write(ctx.hierarchy_path + "\\n")

    def base(ctx):
        mark(ctx)
        return ctx.input.n

    def add(ctx):
        mark(ctx)
        return [v + ctx.results["base"] for v in ctx.input.values]

    def score(ctx):
        mark(ctx)
        return ctx.input.fail

    sums = FlowDefinition("sums").node("base", base, input_model=Base).node("add", add, input_model=Values) \\
        .node("score", score, input_model=Score)
''')


@pytest.fixture
def flows(project: Path) -> str:
    """A flow of three typed nodes in the project; returns its reference."""
    (project / "sbx_components" / "typed.py").write_text(FLOWS)
    return "sbx_components.typed:sums"


def cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=project, capture_output=True, text=True, timeout=180,
                          env={**__import__("os").environ, "DAD_SANDBOX_NO_SERVER": "1"})


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def outputs(summary: dict) -> dict[str, object]:
    return {n["hierarchy_path"]: n["output"] for n in summary["nodes"]}


def test_wrong_input_type_fails_before_any_node(project: Path, flows: str, tmp_path: Path) -> None:
    """A bool field given "maybe": one line naming node, field and type, exit 7, failed (invalid_inputs), nothing ran."""
    bad = write(tmp_path / "bad.json", {"base": {"n": 1}, "add": {"values": [1]}, "score": {"fail": "maybe"}})
    res = cli(project, "run", flows, "--inputs", str(bad))
    assert res.returncode == 7, res.stderr
    (line,) = res.stderr.strip().splitlines()  # one line: no progress, no traceback
    assert "sums.score" in line and "'fail'" in line and "bool" in line and "Traceback" not in res.stderr
    as_json = cli(project, "run", flows, "--inputs", str(bad), "--json")
    obj = json.loads(as_json.stdout)
    assert as_json.returncode == 7 and obj["kind"] == "invalid_inputs" and obj["error"] == line.removeprefix("error: ")
    run_dir = project / "runs" / obj["run_id"]
    md = read_metadata(run_dir)
    assert (md.status.value, md.reason) == ("failed", "invalid_inputs")
    assert not (run_dir / "executed.log").exists() and not (run_dir / "sums").exists()


def test_component_that_does_not_import_is_one_line(project: Path) -> None:
    """A module with a SyntaxError, raising at import, missing, or without the attribute: failed (component_load),
    one line, exit 7."""
    (project / "sbx_components" / "broken.py").write_text("def oops(:\n")
    (project / "sbx_components" / "raising.py").write_text("raise RuntimeError('no import for you')\n")
    cases = (("sbx_components.broken:x", "SyntaxError"), ("sbx_components.raising:x", "no import for you"),
             ("sbx_components.nope:x", "cannot import module"), ("sbx_components.flows:missing", "no attribute"))
    for ref, words in cases:
        res = cli(project, "run", ref, "--json")
        assert res.returncode == 7, res.stderr
        obj = json.loads(res.stdout)
        assert obj["kind"] == "component_load" and words in obj["error"], obj
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        md = read_metadata(project / "runs" / obj["run_id"])
        assert (md.status.value, md.reason) == ("failed", "component_load")


def test_rerun_reproduces_policy_image_and_inputs(project: Path, flows: str, tmp_path: Path) -> None:
    """A re-run keeps the previous policy and image id and overlays --inputs per node; overrides say so."""
    inputs = write(tmp_path / "in.json", {"base": {"n": 1}, "add": {"values": [3, 4, 5]}})
    first = cli(project, "run", flows, "--policy", "default", "--inputs", str(inputs), "--json")
    assert first.returncode == 0, first.stderr
    s1 = json.loads(first.stdout)
    assert outputs(s1)["sums.add"] == [4, 5, 6]
    md1 = read_metadata(Path(s1["run_dir"]))

    fix = write(tmp_path / "fix.json", {"base": {"n": 2}})
    again = cli(project, "rerun", s1["run_id"], "--from", "sums.base", "--inputs", str(fix))
    assert again.returncode == 0, again.stderr
    assert "policy 'default' as recorded" in again.stderr and "image sha256:" in again.stderr
    rerun = read_metadata(max((project / "runs").glob("rerun_*")))
    assert rerun.policy_name == "default" and rerun.policy["memory"] == md1.policy["memory"] == 2 << 30
    assert rerun.image_id == md1.image_id and rerun.policy["image"] == md1.image_id
    assert json.loads((rerun_dir := project / "runs" / rerun.run_id).joinpath("sums/add/result.json").read_text())[
        "output"] == [5, 6, 7]  # add kept its values; base got the fix
    assert json.loads((rerun_dir / "static_inputs" / "static_inputs.json").read_text())["add"] == {"values": [3, 4, 5]}

    override = cli(project, "rerun", s1["run_id"], "--from", "sums.add", "--policy", "untrusted", "--json")
    assert override.returncode == 0, override.stderr
    s3 = json.loads(override.stdout)
    assert "from --policy" in " ".join(s3["reproduction"]["notes"])
    assert read_metadata(Path(s3["run_dir"])).policy_name == "untrusted"

    replaced = cli(project, "rerun", s1["run_id"], "--from", "sums.base", "--inputs", str(fix), "--replace-inputs",
                   "--json")
    assert replaced.returncode == 7 and json.loads(replaced.stdout)["kind"] == "invalid_inputs"
    assert "sums.add" in json.loads(replaced.stdout)["error"]  # add lost its inputs, as asked


def test_replay_and_diff_and_missing_image(project: Path, flows: str, tmp_path: Path) -> None:
    """replay re-executes from metadata alone (same inputs, policy, image id); a vanished image id is a clear error."""
    inputs = write(tmp_path / "in.json", {"base": {"n": 1}, "add": {"values": [1, 2]}})
    first = json.loads(cli(project, "run", flows, "--policy", "default", "--inputs", str(inputs), "--json").stdout)
    res = cli(project, "replay", first["run_id"], "--json")
    assert res.returncode == 0, res.stderr
    again = json.loads(res.stdout)
    assert outputs(again) == outputs(first) and again["replay_of"] == first["run_id"]
    md1, md2 = read_metadata(Path(first["run_dir"])), read_metadata(Path(again["run_dir"]))
    assert (md2.policy_name, md2.image_id, md2.component) == (md1.policy_name, md1.image_id, md1.component)
    diff = json.loads(cli(project, "runs", "diff", first["run_id"], again["run_id"], "--json").stdout)
    assert [d["path"] for d in diff if not d["path"].endswith(("RUN.json", "result.json"))] == []
    assert "replay of" in cli(project, "runs", "show", again["run_id"]).stdout

    command = json.loads(cli(project, "exec", "--json", "--", "python3", "-c", "print(6*7)").stdout)
    replayed = cli(project, "replay", command["run_id"])
    assert replayed.returncode == 0 and "42" in replayed.stdout, replayed.stderr

    md1 = md1.model_copy(update={"image_id": "sha256:" + "0" * 64})
    write_metadata(Path(first["run_dir"]), md1)
    gone = cli(project, "replay", first["run_id"], "--json")
    assert gone.returncode == 7 and json.loads(gone.stdout)["kind"] == "image_missing"
    assert "no longer on this engine" in gone.stderr and "--image" in gone.stderr


def test_rerun_of_an_in_process_run(project: Path) -> None:
    """An in-process run records its component reference, so `rerun` re-runs it (under untrusted, saying why)."""
    import asyncio

    from sbx_components.flows import counted_agent

    from dad_sandbox import AgentRunner, RunContext

    ctx = RunContext("counted", project)
    ctx.setup_run()
    asyncio.run(AgentRunner(counted_agent, ctx).run())
    res = cli(project, "rerun", ctx.run_id, "--from", "counted.main.c")
    assert res.returncode == 0, res.stderr
    assert f"run {ctx.run_id} ran in-process and recorded no policy" in res.stderr
    assert "ran a command" not in res.stderr


def test_rerun_of_a_refused_run_cannot_load_and_says_so(project: Path, flows: str, tmp_path: Path) -> None:
    """Re-running from a later node of a run that never ran ends failed (rerun_target) in one line, exit 7."""
    bad = write(tmp_path / "bad.json", {"base": {"n": "x"}, "add": {"values": [1]}})
    refused = json.loads(cli(project, "run", flows, "--inputs", str(bad), "--json").stdout)
    good = write(tmp_path / "good.json", {"base": {"n": 1}})
    res = cli(project, "rerun", refused["run_id"], "--from", "sums.add", "--inputs", str(good), "--json")
    assert res.returncode == 7, res.stderr
    obj = json.loads(res.stdout)
    assert obj["kind"] == "rerun_target" and "sums.base" in obj["error"] and "previous run" in obj["error"]
    assert not (project / "runs" / obj["run_id"] / "executed.log").exists()
