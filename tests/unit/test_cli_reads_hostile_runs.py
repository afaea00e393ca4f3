"""The reading commands survive run dirs with crafted content: wrong-typed spans, parent cycles,
deep chains, huge numbers, escape sequences (trust boundary rule 2), with no engine."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dad_sandbox.cli import main
from dad_sandbox.run import RunContext

GOOD = {"trace_id": "t" * 32, "span_id": "root", "parent_span_id": None, "name": "agent",
        "start_time_unix_nano": 1, "end_time_unix_nano": 2, "status": {"code": "STATUS_CODE_OK"},
        "attributes": {"dad.node.status": "completed", "dad.hierarchy_path": "a.b", "dad.duration_seconds": 10**400}}


def crafted_run(tmp_path: Path) -> RunContext:
    project = tmp_path / "project"
    project.mkdir()
    ctx = RunContext("agent", project, run_root=tmp_path / "runs")
    ctx.setup_run()
    lines = [
        json.dumps(GOOD),
        json.dumps({**GOOD, "span_id": 5, "attributes": []}),                     # wrong types
        json.dumps({**GOOD, "span_id": "x", "parent_span_id": "y", "name": "x"}),  # a parent cycle
        json.dumps({**GOOD, "span_id": "y", "parent_span_id": "x", "name": "y"}),
        "[" * 100_000,                                                             # recursion bomb
        json.dumps({**GOOD, "span_id": "esc", "name": "\x1b[2Jcleared", "attributes": {"dad.node.status": "\x1b]52;c;x\x07"}}),
    ]
    lines += [json.dumps({**GOOD, "span_id": f"c{i}", "parent_span_id": f"c{i - 1}" if i else "root"}) for i in range(3000)]
    (ctx.trace_dir / "trace.jsonl").write_text("\n".join(lines) + "\n")
    (ctx.trace_dir / "logs.jsonl").write_text(json.dumps({"source": "container", "message": "\x1b[2J\x1b]52;c;aGk=\x07"}) + "\n")
    return ctx


def test_runs_show_trace_and_logs_survive_crafted_files(tmp_path: Path) -> None:
    """runs show/trace/logs neither crash nor loop on crafted spans, and print no raw escape sequence."""
    ctx = crafted_run(tmp_path)
    runner = CliRunner()
    for args in (["runs", "show", ctx.run_id], ["runs", "trace", ctx.run_id], ["runs", "trace", ctx.run_id, "--json"],
                 ["runs", "logs", ctx.run_id]):
        got = runner.invoke(main, [*args, "--run-root", str(ctx.run_root)])
        assert got.exit_code == 0, (args, got.output, got.exception)
        assert "Traceback" not in got.output
    spans = json.loads(runner.invoke(main, ["runs", "trace", ctx.run_id, "--json", "--run-root", str(ctx.run_root)]).output)
    assert {s["span_id"] for s in spans} >= {"root", "x", "y", "esc"} and all(isinstance(s["span_id"], str) for s in spans)
