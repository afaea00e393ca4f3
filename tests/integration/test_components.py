"""Components in containers: every element type, re-runs, the outcome repository, OTLP export, CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import git
import pytest

from dad_sandbox import AgentRunner, IsolatedExecution, RunContext, RunStatus, Supervisor
from dad_sandbox.errors import RerunTargetError
from dad_sandbox.run import read_metadata

CLI = [sys.executable, "-m", "dad_sandbox.cli"]


def run_agent(project: Path, agent, *, inputs=None, **ctx_kw):
    ctx = RunContext(agent.id, project, **ctx_kw)
    ctx.setup_run()
    for key, value in (inputs or {}).items():
        ctx.register_node_static_input(key, value)

    async def go():
        async with IsolatedExecution(ctx) as execution:
            return await execution.run(AgentRunner(agent, ctx))

    return ctx, asyncio.run(go())


def test_every_element_type_in_the_container(project: Path) -> None:
    """Function, command and file nodes, a loop and a branch run inside the container."""
    from sbx_components.flows import everything

    ctx, result = run_agent(project, everything, inputs={"first": {"name": "n"}})
    assert result.status == RunStatus.COMPLETED, result.error
    outputs = {n["hierarchy_path"]: n["output"] for n in result.nodes}
    assert outputs["everything.main.cmd"]["stdout"].strip() == "42"
    assert outputs["everything.main.loop.iter_1.echo"] == "Y"
    assert outputs["everything.main.cond.is_true.fine"] == "yes"
    metrics = [json.loads(x) for x in (ctx.trace_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for m in metrics if m.get("name") == "dad.node.success") == 6
    logs = [json.loads(x) for x in (ctx.trace_dir / "logs.jsonl").read_text().splitlines()]
    assert any(r.get("source") == "runner" and r.get("event") == "node started" for r in logs)
    spans = [json.loads(x) for x in (ctx.trace_dir / "trace.jsonl").read_text().splitlines()]
    types = {s["attributes"].get("dad.element.type") for s in spans}
    assert {"agent", "flow", "function_node", "command_node", "file_node", "for_each", "loop_iteration",
            "conditional"} <= types
    # outcome repository: branch run/<id>, one commit, the file node's file, main untouched
    repo = git.Repo(ctx.layout.outcome_repo_dir)
    branch = f"run/{ctx.run_id}"
    commit = repo.commit(branch)
    assert commit.message.strip() == f"[{ctx.run_id}] Run completed"
    assert repo.git.show(f"{branch}:everything/main/files/answer.txt").strip() == "42"
    assert len(list(repo.iter_commits("main"))) == 1
    assert read_metadata(ctx.run_dir).outcome_branch == branch


def test_rerun_in_container_skips_and_mounts_previous_read_only(project: Path) -> None:
    """A re-run executes only from the start node (a side-effect counter proves it); the previous
    run is visible read-only."""
    from sbx_components.flows import counted_agent

    first, r1 = run_agent(project, counted_agent)
    assert r1.status == RunStatus.COMPLETED
    assert (first.run_dir / "executed.log").read_text().split() == ["counted.main.a", "counted.main.b", "counted.main.c"]
    again, r2 = run_agent(project, counted_agent, previous_run_id=first.run_id, start_hierarchy_path="counted.main.b")
    assert r2.status == RunStatus.COMPLETED, r2.error
    assert (again.run_dir / "executed.log").read_text().split() == ["counted.main.b", "counted.main.c"]
    statuses = {n["hierarchy_path"]: n["status"] for n in r2.nodes}
    assert statuses == {"counted.main.a": "loaded", "counted.main.b": "completed", "counted.main.c": "completed"}
    out_b = next(n["output"] for n in r2.nodes if n["hierarchy_path"] == "counted.main.b")
    assert out_b["saw"] == [first.run_id] and out_b["previous_writable"] == []
    md = read_metadata(again.run_dir)
    assert again.run_id.startswith("rerun_")
    assert md.rerun.previous_run_id == first.run_id and md.rerun.start_hierarchy_path == "counted.main.b"


def test_rerun_bad_start_path_fails_before_any_container(project: Path) -> None:
    """A start path that matches nothing is an error before a container starts; b.c never matches ab.c."""
    from sbx_components.flows import counted_agent

    first, _ = run_agent(project, counted_agent)
    for start in ("counted.main.x", "main.b", "counted.mai"):
        with pytest.raises(RerunTargetError):
            run_agent(project, counted_agent, previous_run_id=first.run_id, start_hierarchy_path=start)
    runs = [read_metadata(d) for d in (project / "runs").iterdir() if d.name.startswith("rerun_")]
    assert len(runs) == 3 and all(m.container_id is None and m.reason == "rerun_target" for m in runs)


def test_twenty_parallel_runs_commit_twenty_outcomes(project: Path) -> None:
    """20 runs at once: 20 branches, 20 commits, no git lock errors, main left clean."""
    async def go():
        async with Supervisor(project_root=project, max_parallel=20) as sup:
            handles = [sup.submit(component="sbx_components.flows:counted_agent") for _ in range(20)]
            return await asyncio.gather(*(h.wait() for h in handles))

    results = asyncio.run(go())
    assert all(r.status == RunStatus.COMPLETED for r in results)
    repo = git.Repo(project / "runs" / "outcome" / project.name)
    branches = {h.name for h in repo.heads}
    assert {f"run/{r.run_id}" for r in results} <= branches
    assert all(r.metadata.outcome_error is None for r in results)
    assert len(list(repo.iter_commits("main"))) == 1 and not repo.is_dirty(untracked_files=True)


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Receiver.bodies.append({"path": self.path, "body": json.loads(self.rfile.read(length))})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


def test_export_otlp_to_a_local_receiver(project: Path) -> None:
    """runs export-otlp posts OTLP JSON spans (ids, parents, times, status, dad.* attributes) to /v1/traces."""
    from sbx_components.flows import counted_agent

    ctx, _ = run_agent(project, counted_agent)
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}"
        res = subprocess.run([*CLI, "runs", "export-otlp", ctx.run_id, "--endpoint", endpoint],
                             cwd=project, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert res.returncode == 0, res.stderr
    (received,) = _Receiver.bodies
    assert received["path"] == "/v1/traces"
    spans = received["body"]["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert len(spans) == 5  # agent, flow, 3 nodes
    by_name = {s["name"]: s for s in spans}
    assert by_name["b"]["parentSpanId"] == by_name["main"]["spanId"]
    assert len(by_name["b"]["traceId"]) == 32 and by_name["b"]["status"]["code"] == 1
    attrs = {a["key"]: a["value"] for a in by_name["b"]["attributes"]}
    assert attrs["dad.hierarchy_path"] == {"stringValue": "counted.main.b"}
    assert int(by_name["b"]["endTimeUnixNano"]) >= int(by_name["b"]["startTimeUnixNano"]) > 0


def cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=project, capture_output=True, text=True, timeout=120)


def test_cli_run_rerun_and_inspect(project: Path) -> None:
    """run, rerun --from, runs ls/show/logs/trace/diff all work and --json parses."""
    first = cli(project, "run", "sbx_components.flows:counted_agent", "--json")
    assert first.returncode == 0, first.stderr
    run_id = json.loads(first.stdout)["run_id"]
    again = cli(project, "rerun", run_id, "--from", "counted.main.c", "--json")
    assert again.returncode == 0, again.stderr
    rerun_id = json.loads(again.stdout)["run_id"]
    assert [n["status"] for n in json.loads(again.stdout)["nodes"]] == ["loaded", "loaded", "completed"]

    ls = json.loads(cli(project, "runs", "ls", "--json").stdout)
    assert [r["run_id"] for r in ls][:2] == [rerun_id, run_id]
    show = json.loads(cli(project, "runs", "show", rerun_id, "--json").stdout)
    assert show["rerun"]["previous_run_id"] == run_id
    assert "counted.main.c" in cli(project, "runs", "show", rerun_id).stdout
    logs = cli(project, "runs", "logs", run_id)
    assert "node started node=counted.main.a" in logs.stdout
    follow = cli(project, "runs", "logs", run_id, "--follow", "--json")
    assert follow.returncode == 0 and all(json.loads(x) for x in follow.stdout.splitlines())
    trace = cli(project, "runs", "trace", rerun_id).stdout
    assert "loaded from previous run" in trace and "c " in trace
    diff = json.loads(cli(project, "runs", "diff", run_id, rerun_id, "--json").stdout)
    assert {"status": "M", "path": "RUN.json"} in diff
    missing = cli(project, "runs", "show", "run_20000101_000000_abcdef")
    assert missing.returncode == 7 and "no run" in missing.stderr
    bad_start = cli(project, "rerun", run_id, "--from", "counted.nope")
    assert bad_start.returncode == 7 and "matches no element" in bad_start.stderr


def test_cli_doctor_and_policy(project: Path, tmp_path: Path) -> None:
    """doctor reports ok on this machine; policy validate names file and key; schema is JSON Schema."""
    doctor = cli(project, "doctor", "--json")
    assert doctor.returncode == 0, doctor.stdout
    assert {c["name"] for c in json.loads(doctor.stdout)} >= {"engine", "image", "disk", "policies"}
    bad = tmp_path / "bad.toml"
    bad.write_text('image = "x"\ncpus = -1\n')
    res = cli(project, "policy", "validate", str(bad))
    assert res.returncode == 7 and "cpus" in res.stderr and str(bad) in res.stderr
    schema = json.loads(cli(project, "policy", "schema").stdout)
    assert schema["additionalProperties"] is False and "memory" in schema["properties"]
    shown = json.loads(cli(project, "policy", "show", "untrusted", "--json").stdout)
    assert shown["network"] == "none"
