"""Pre-flight checks of a request against its component: one-line errors before any node runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from dad_sandbox import AgentDefinition, FlowDefinition, RunContext
from dad_sandbox.errors import StaticInputsError
from dad_sandbox.runner._preflight import describe, preflight


class Score(BaseModel):
    fail: bool = False


class Need(BaseModel):
    name: str
    count: int = 1


def agent() -> AgentDefinition:
    body = FlowDefinition("body").node("each", lambda ctx: ctx.item, input_model=Score)
    branch = FlowDefinition("yes").node("maybe", lambda ctx: 1, input_model=Need)
    main = (FlowDefinition("main").node("first", lambda ctx: 1, input_model=Need)
            .node("score", lambda ctx: ctx.input.fail, input_model=Score)
            .for_each("loop", lambda ctx: [1, 2], body)
            .conditional("cond", lambda ctx: False, branch))
    return AgentDefinition("ag", flows=[main])


def ctx_with(tmp_path: Path, inputs: dict, **kw) -> RunContext:
    ctx = RunContext("ag", tmp_path, **kw)
    ctx.setup_run()
    for key, value in inputs.items():
        ctx.register_node_static_input(key, value)
    return ctx


def test_wrong_type_names_node_field_and_expected_type(tmp_path: Path) -> None:
    """A bool field given "maybe" fails with the node path, the field, the declared type and the value, on one line."""
    ctx = ctx_with(tmp_path, {"first": {"name": "x"}, "score": {"fail": "maybe"}})
    with pytest.raises(StaticInputsError) as exc:
        preflight(agent(), ctx)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "'ag.main.score'" in msg and "'fail'" in msg and "expected bool" in msg and "'maybe'" in msg


def test_missing_required_field_of_a_node_that_will_run(tmp_path: Path) -> None:
    """A node with required fields and no input is refused up front, naming the field and its type."""
    with pytest.raises(StaticInputsError, match=r"'ag.main.first' needs a static input of type Need with 'name' \(str\)"):
        preflight(agent(), ctx_with(tmp_path, {}))


def test_branch_and_loop_nodes_may_lack_inputs(tmp_path: Path) -> None:
    """Nodes in a branch or a loop body may never run, so a missing input there is not an error yet."""
    preflight(agent(), ctx_with(tmp_path, {"first": {"name": "x"}}))


def test_full_path_value_wins_over_bare_id(tmp_path: Path) -> None:
    """When a path key and a bare id both reach a node, only the winning (path) value must validate."""
    ctx = ctx_with(tmp_path, {"first": {"name": "x"}, "score": {"fail": "maybe"}, "ag.main.score": {"fail": True}})
    preflight(agent(), ctx)


def test_loop_iteration_keys_are_checked(tmp_path: Path) -> None:
    """A concrete loop-iteration key is validated against the loop body's node model."""
    ctx = ctx_with(tmp_path, {"first": {"name": "x"}, "ag.main.loop.iter_1.each": {"fail": [1]}})
    with pytest.raises(StaticInputsError, match="iter_1.each"):
        preflight(agent(), ctx)


def test_rerun_does_not_require_inputs_of_loaded_nodes(tmp_path: Path) -> None:
    """In a re-run from ag.main.score, ag.main.first is loaded, so its missing input is fine."""
    first = ctx_with(tmp_path, {"first": {"name": "x"}})
    again = ctx_with(tmp_path, {}, previous_run_id=first.run_id, start_hierarchy_path="ag.main.score")
    preflight(agent(), again)


def test_describe_lists_paths(tmp_path: Path) -> None:
    """describe() returns the id, kind and every static path (data only, for the host)."""
    d = describe(agent()).to_json()
    assert d["id"] == "ag" and d["kind"] == "agent"
    assert {"ag.main.score", "ag.main.loop.iter_N.each", "ag.main.cond.is_true.maybe"} <= set(d["paths"])
