"""Runners executing in-process (trusted code): node folders, spans, failures."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dad_sandbox import AgentRunner, FlowRunner, RunContext
from dad_sandbox.errors import ComponentReferenceError, NodeError, StaticInputsError
from dad_sandbox.runner import import_component, reference_of


def run(coro):
    return asyncio.run(coro)


def test_agent_writes_node_dirs_and_spans(project: Path) -> None:
    """Each node gets <root>/<flow>/<node>/result.json and outcome.json, and one span per element."""
    from sbx_components.flows import In, ok_agent

    ctx = RunContext("agent", project)
    ctx.setup_run()
    ctx.register_node_static_input("first", In(name="x"))
    result = run(AgentRunner(ok_agent, ctx).run())
    assert result.status == "completed"
    node_dir = ctx.run_dir / "agent" / "work" / "second"
    assert json.loads((node_dir / "result.json").read_text())["output"]["seen"] == "x"
    assert json.loads((node_dir / "outcome.json").read_text())["hierarchy_path"] == "agent.work.second"
    spans = [json.loads(line) for line in (ctx.trace_dir / "trace.jsonl").read_text().splitlines()]
    names = [s["name"] for s in spans]
    assert names == ["first", "second", "work", "agent"]
    assert len({s["trace_id"] for s in spans}) == 1
    by_name = {s["name"]: s for s in spans}
    assert by_name["first"]["parent_span_id"] == by_name["work"]["span_id"]
    assert by_name["agent"]["parent_span_id"] is None
    assert by_name["second"]["attributes"]["dad.hierarchy_path"] == "agent.work.second"
    assert all(s["status"]["code"] == "STATUS_CODE_OK" for s in spans)


def test_node_failure_raises_with_path_and_stops(project: Path) -> None:
    """A node that raises fails the run with its hierarchy path; later nodes do not run."""
    from sbx_components.flows import bad_agent

    ctx = RunContext("bad", project)
    ctx.setup_run()
    ctx.register_node_static_input("first", {"name": "x"})
    with pytest.raises(NodeError) as exc:
        run(AgentRunner(bad_agent, ctx).run())
    assert exc.value.hierarchy_path == "bad.work.explode"
    assert "kaboom" in str(exc.value) and "Traceback" in str(exc.value)
    assert not (ctx.run_dir / "bad" / "work" / "never").exists()
    failed = json.loads((ctx.run_dir / "bad" / "work" / "explode" / "result.json").read_text())
    assert failed["status"] == "failed"


def test_missing_required_static_input_fails_before_any_node(project: Path) -> None:
    """A node whose input model has required fields and no value fails the run before any node runs."""
    from sbx_components.flows import ok_agent

    ctx = RunContext("agent", project)
    ctx.setup_run()
    with pytest.raises(StaticInputsError, match="agent.work.first.*needs a static input.*'name' \\(str\\)"):
        run(AgentRunner(ok_agent, ctx).run())
    assert not (ctx.run_dir / "agent").exists()
    md = ctx.metadata
    assert (md.status.value, md.reason) == ("failed", "invalid_inputs")


def test_runner_type_checks(project: Path) -> None:
    """A FlowRunner refuses an agent (and vice versa)."""
    from sbx_components.flows import ok_agent

    ctx = RunContext("agent", project)
    with pytest.raises(TypeError):
        FlowRunner(ok_agent, ctx)


def test_reference_round_trip(project: Path) -> None:
    """A module-level component is named module:attribute and imports back to itself."""
    from sbx_components.flows import ok_agent

    ref = reference_of(ok_agent, project)
    assert ref == "sbx_components.flows:ok_agent"
    assert import_component(ref) is ok_agent


@pytest.mark.parametrize(
    ("ref", "match"),
    [("nocolon", "module:attribute"), ("__main__:x", "__main__"), ("sbx_components.nope:x", "cannot import"),
     ("sbx_components.flows:missing", "no attribute"), ("sbx_components.flows:not_a_component", "not a FlowDefinition")],
)
def test_bad_references(project: Path, ref: str, match: str) -> None:
    """Bad references fail with a message that says what to do."""
    with pytest.raises(ComponentReferenceError, match=match):
        import_component(ref)


def test_main_component_is_refused(project: Path) -> None:
    """A component defined in __main__ cannot be sent to a container."""
    from dad_sandbox import FlowDefinition

    flow = FlowDefinition("f")
    flow.defined_in = "__main__"
    with pytest.raises(ComponentReferenceError, match="__main__"):
        reference_of(flow, project)
