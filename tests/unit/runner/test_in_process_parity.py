"""In-process runs (trusted, outside IsolatedExecution) leave the same records as isolated ones."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dad_sandbox import AgentRunner, RunContext
from dad_sandbox.cli import main
from dad_sandbox.errors import NodeError
from dad_sandbox.run import read_metadata


def test_failed_in_process_run_records_reason_logs_and_reference(project: Path) -> None:
    """A node failure: failed (node_failed) with the error, runner records in logs.jsonl, the reference kept."""
    from sbx_components.flows import bad_agent

    ctx = RunContext("bad", project)
    ctx.setup_run()
    ctx.register_node_static_input("first", {"name": "x"})
    with pytest.raises(NodeError):
        asyncio.run(AgentRunner(bad_agent, ctx).run())
    md = read_metadata(ctx.run_dir)
    assert (md.status.value, md.reason) == ("failed", "node_failed") and "kaboom" in md.error
    assert md.component == "sbx_components.flows:bad_agent"  # so `rerun` knows it was a component
    assert (md.execution, md.image, md.runtime, md.policy_name) == ("in_process", "in-process", "in-process", "in-process")
    logs = [json.loads(x) for x in (ctx.trace_dir / "logs.jsonl").read_text().splitlines()]
    events = [(r["source"], r["event"], r["fields"].get("node")) for r in logs]
    assert ("runner", "node started", "bad.work.first") in events and ("runner", "node failed", "bad.work.explode") in events
    assert md.outcome_branch == f"run/{ctx.run_id}"


def test_completed_in_process_run_and_runs_show(project: Path) -> None:
    """A completed in-process run is final on its own, and `runs show` says in-process instead of 'None ()'."""
    from sbx_components.flows import ok_agent

    ctx = RunContext("agent", project)
    ctx.setup_run()
    ctx.register_node_static_input("first", {"name": "x"})
    asyncio.run(AgentRunner(ok_agent, ctx).run())
    ctx.complete_run(status="completed")  # the seed's call stays harmless
    md = read_metadata(ctx.run_dir)
    assert (md.status.value, md.reason, md.error) == ("completed", None, None)
    shown = CliRunner().invoke(main, ["runs", "show", ctx.run_id, "--run-root", str(ctx.run_root)])
    assert shown.exit_code == 0, shown.output
    assert "None" not in shown.stdout
    assert any(line.split()[:2] == ["policy", "in-process"] for line in shown.stdout.splitlines())
    assert any(line.split()[:2] == ["execution", "in_process"] for line in shown.stdout.splitlines())
