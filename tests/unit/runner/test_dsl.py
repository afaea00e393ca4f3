"""The component model run in-process: every element type, paths, failures, static inputs, re-runs."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from dad_sandbox import AgentDefinition, AgentRunner, FlowDefinition, FlowRunner, RunContext
from dad_sandbox.errors import NodeError, RerunTargetError, StaticInputsError
from dad_sandbox.runner import path_matches

EXECUTED: list[str] = []


def track(name: str, value: object = None):
    def fn(ctx):
        EXECUTED.append(ctx.hierarchy_path)
        return value if value is not None else {"node": name, "item": ctx.item, "index": ctx.index}
    return fn


class Cfg(BaseModel):
    n: int = 1


def make_agent() -> AgentDefinition:
    body = FlowDefinition("body").node("square", lambda ctx: ctx.item * ctx.item)
    yes = FlowDefinition("yes").node("said_yes", track("yes"))
    no = FlowDefinition("no").node("said_no", track("no"))
    sub = FlowDefinition("sub").node("inner", track("inner"))
    main = (
        FlowDefinition("main")
        .node("first", track("first"), input_model=Cfg)
        .command("cmd", [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"])
        .file("files", lambda ctx: {"a.txt": "A", "d/b.bin": b"B"})
        .subflow(sub)
        .for_each("loop", lambda ctx: [1, 2, 3], body)
        .conditional("cond", lambda ctx: ctx.results["first"]["node"] == "first", yes, no)
        .node("last", track("last"))
    )
    helper = AgentDefinition("helper", flows=[FlowDefinition("hf").node("h", track("h"))])
    return AgentDefinition("root", flows=[main], subagents=[helper])


def ctx_for(tmp_path: Path, root: str = "root", **kw) -> RunContext:
    ctx = RunContext(root, tmp_path, **kw)
    ctx.setup_run()
    return ctx


def test_every_element_type_and_path(tmp_path: Path) -> None:
    """Nodes, command, file, subflow, loop, branch and subagent run in order with the documented paths."""
    ctx = ctx_for(tmp_path)
    result = asyncio.run(AgentRunner(make_agent(), ctx).run())
    paths = [n.hierarchy_path for n in result.nodes]
    assert paths == [
        "root.main.first", "root.main.cmd", "root.main.files", "root.main.sub.inner",
        "root.main.loop.iter_0.square", "root.main.loop.iter_1.square", "root.main.loop.iter_2.square",
        "root.main.cond.is_true.said_yes", "root.main.last", "root.helper.hf.h",
    ]
    outputs = result.outputs
    assert [outputs[f"root.main.loop.iter_{i}.square"] for i in range(3)] == [1, 4, 9]
    cmd = outputs["root.main.cmd"]
    assert (cmd["exit_code"], cmd["stdout"].strip(), cmd["stderr"].strip()) == (0, "out", "err")
    node_dir = ctx.run_dir / "root" / "main" / "files"
    assert (node_dir / "a.txt").read_text() == "A" and (node_dir / "d" / "b.bin").read_bytes() == b"B"
    assert json.loads((node_dir / "outcome.json").read_text())["files"] == ["a.txt", "d/b.bin"]
    assert (ctx.run_dir / "root" / "main" / "cmd" / "stdout.txt").read_text().strip() == "out"
    metrics = [json.loads(x) for x in (ctx.trace_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for m in metrics if m["name"] == "dad.node.success") == 10
    assert {m["name"] for m in metrics} == {"dad.node.duration", "dad.node.success"}


def test_failing_command_fails_the_run(tmp_path: Path) -> None:
    """A command that exits non-zero fails its node and the run, with its output kept."""
    flow = FlowDefinition("f").command("c", [sys.executable, "-c", "import sys; print('bad'); sys.exit(3)"])
    ctx = ctx_for(tmp_path, "f")
    with pytest.raises(NodeError, match="code 3") as exc:
        asyncio.run(FlowRunner(flow, ctx).run())
    assert exc.value.hierarchy_path == "f.c"
    result = json.loads((ctx.run_dir / "f" / "c" / "result.json").read_text())
    assert result["status"] == "failed" and result["output"]["stdout"].strip() == "bad"


def test_command_timeout_kills_it(tmp_path: Path) -> None:
    """A command past its own timeout is killed and its node fails."""
    flow = FlowDefinition("f").command("c", [sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    ctx = ctx_for(tmp_path, "f")
    with pytest.raises(NodeError, match="timed out"):
        asyncio.run(FlowRunner(flow, ctx).run())


def test_continue_on_error(tmp_path: Path) -> None:
    """A node with continue_on_error records its failure and the run goes on."""
    def boom(ctx):
        raise RuntimeError("tolerated")
    flow = FlowDefinition("f").node("a", boom, continue_on_error=True).node("b", lambda ctx: "ran")
    ctx = ctx_for(tmp_path, "f")
    result = asyncio.run(FlowRunner(flow, ctx).run())
    assert [(n.hierarchy_path, n.status) for n in result.nodes] == [("f.a", "failed"), ("f.b", "completed")]


@pytest.mark.parametrize("bad", ["has.dot", "has space", "", "iter_3", "is_true", "ünï"])
def test_bad_element_ids_are_rejected(bad: str) -> None:
    """Ids outside ^[A-Za-z0-9_]+$ (or reserved for paths) are rejected with the id named."""
    with pytest.raises(ValueError, match=repr(bad).strip("'") if bad else "''"):
        FlowDefinition(bad)


def test_duplicate_ids_are_rejected() -> None:
    """Two elements with one id in a container are rejected."""
    with pytest.raises(ValueError, match="already has"):
        FlowDefinition("f").node("a", track("a")).node("a", track("a"))


def test_ambiguous_bare_id_names_candidates(tmp_path: Path) -> None:
    """A static input keyed by a bare id used by two nodes is an error listing both paths."""
    agent = AgentDefinition("r", flows=[FlowDefinition("f1").node("n", track("n")),
                                        FlowDefinition("f2").node("n", track("n"))])
    ctx = ctx_for(tmp_path, "r")
    ctx.register_node_static_input("n", {"x": 1})
    with pytest.raises(StaticInputsError, match=r"ambiguous.*r\.f1\.n.*r\.f2\.n"):
        AgentRunner(agent, ctx).validate()
    ctx2 = ctx_for(tmp_path, "r")
    ctx2.register_node_static_input("r.f1.n", {"x": 1})
    AgentRunner(agent, ctx2).validate()


def test_unknown_static_input_key(tmp_path: Path) -> None:
    """A key naming no node is an error (a typo would otherwise be silently ignored)."""
    ctx = ctx_for(tmp_path)
    ctx.register_node_static_input("frist", {"n": 1})
    with pytest.raises(StaticInputsError, match="frist"):
        AgentRunner(make_agent(), ctx).validate()


def test_path_matching_respects_dot_boundaries() -> None:
    """b.c matches b.c and its ancestors b; it never matches ab.c."""
    assert path_matches("a.b", "a.b.c") and path_matches("a.b.c", "a.b.c")
    assert not path_matches("a.b", "a.bc") and not path_matches("b.c", "ab.c") and not path_matches("a.b.c", "a.b")


def test_rerun_skips_earlier_nodes(tmp_path: Path) -> None:
    """A re-run from a node loads earlier nodes from the previous run and executes only the rest."""
    agent = make_agent()
    first = ctx_for(tmp_path)
    asyncio.run(AgentRunner(agent, first).run())
    EXECUTED.clear()
    rerun = ctx_for(tmp_path, previous_run_id=first.run_id, start_hierarchy_path="root.main.cond")
    result = asyncio.run(AgentRunner(agent, rerun).run())
    assert EXECUTED == ["root.main.cond.is_true.said_yes", "root.main.last", "root.helper.hf.h"]
    statuses = {n.hierarchy_path: n.status for n in result.nodes}
    assert statuses["root.main.first"] == "loaded" and statuses["root.main.loop.iter_2.square"] == "loaded"
    assert statuses["root.main.last"] == "completed"
    assert (rerun.run_dir / "root" / "main" / "files" / "a.txt").read_text() == "A"  # copied, not re-made


def test_rerun_start_path_must_exist(tmp_path: Path) -> None:
    """A start path matching no element fails before anything runs, suggesting near matches."""
    agent = make_agent()
    first = ctx_for(tmp_path)
    asyncio.run(AgentRunner(agent, first).run())
    rerun = ctx_for(tmp_path, previous_run_id=first.run_id, start_hierarchy_path="main.last")
    with pytest.raises(RerunTargetError, match="root.main.last"):
        AgentRunner(agent, rerun).validate()
