"""Trust boundary rule 2 and 3 on the real engine: what a run writes or prints cannot crash, stall,
bloat or fool the host, quotas hold whatever the run does, and a run sees no other run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dad_sandbox import IsolatedExecution, RunContext, RunStatus, Supervisor, load_policy
from dad_sandbox.run import read_metadata

from ._runs import run_cmd

CLI = [sys.executable, "-m", "dad_sandbox.cli"]


def records(ctx: RunContext, name: str = "logs.jsonl") -> list[dict]:
    return [json.loads(line) for line in (ctx.trace_dir / name).read_text().splitlines()]


# ---------------------------------------------------------------- bounded, total parsing


def test_junk_trace_lines_do_not_bloat_the_host(project: Path) -> None:
    """4 million junk lines in the runner's trace are counted and cut, not held: the run is final and its container gone."""
    from dad_sandbox.run._collect import MAX_LINES

    ctx, result = run_cmd(project, "yes x | head -n 4000000 > .runner/trace.jsonl")
    assert result.status == RunStatus.COMPLETED, result.error
    report = read_metadata(ctx.run_dir).collection["trace.jsonl"]
    assert (report["kept"], report["bad_lines"]) == (0, MAX_LINES)
    assert report["bytes_cut"] == 8_000_000 - 2 * MAX_LINES
    quarantine = (ctx.trace_dir / "quarantine.jsonl").read_text().splitlines()
    assert len(quarantine) <= 1_001, "quarantine records must be bounded"
    assert not (ctx.run_dir / ".runner" / "trace.jsonl").exists(), "the collected staging copy is removed"


@pytest.mark.parametrize("content", [
    "[" * 100_000,                       # recursion bomb
    '{"files": 5}',                      # wrong type
    '{"files": [{"a": 1}, 7, "../../etc/passwd", "/abs", "ok.txt", "x\\u0000y", "\\ud800"]}',
    '"just a string"',
])
def test_hostile_outcome_json_keeps_the_commit(project: Path, content: str) -> None:
    """A hostile outcome.json never raises out of finalization: honest status, container gone, good outcomes committed."""
    script = (
        "mkdir -p good bad && echo '{\"answer\": 42}' > good/outcome.json && echo fine > bad/ok.txt && "
        f"printf '%s' '{content}' > bad/outcome.json"
    )
    ctx, result = run_cmd(project, script)
    assert result.status == RunStatus.COMPLETED, result.error
    md = read_metadata(ctx.run_dir)
    assert md.outcome_commit, md.outcome_error
    import git

    repo = git.Repo(ctx.layout.outcome_repo_dir)
    tree = repo.commit(md.outcome_commit).tree
    assert json.loads((tree / "good" / "outcome.json").data_stream.read()) == {"answer": 42}
    names = {item.path for item in tree.traverse()}
    assert not any(".." in n or n.startswith("/") or "passwd" in n for n in names)


def test_many_sparse_outcomes_are_bounded(project: Path) -> None:
    """Hundreds of sparse 16 MiB outcome files cost the host at most the outcome byte budget."""
    script = ("for i in $(seq 1 200); do mkdir -p n$i && truncate -s 16000000 n$i/outcome.json; done; "
              "mkdir -p j && echo '{}' > j/outcome.json")
    ctx, result = run_cmd(project, script, disk_quota="64m")
    assert result.status == RunStatus.COMPLETED, result.error
    run_json = json.loads(_committed_file(ctx, "RUN.json"))
    assert run_json["skipped"], "oversized outcomes are listed as skipped"


def _committed_file(ctx: RunContext, path: str) -> bytes:
    import git

    md = read_metadata(ctx.run_dir)
    return (git.Repo(ctx.layout.outcome_repo_dir).commit(md.outcome_commit).tree / path).data_stream.read()


HOSTILE_COMPONENT = """
import os
from dad_sandbox import AgentDefinition, FlowDefinition

def forge(ctx):
    with open(os.path.join(os.environ["DAD_RUN_DIR"], ".runner", "runner_report.json"), "w") as fh:
        fh.write(os.environ["FORGED_REPORT"])
    os._exit(0)  # exit 0 with only the forged report left behind

agent = AgentDefinition("forger", flows=[FlowDefinition("main").node("forge", forge)])
"""


@pytest.mark.parametrize("forged", ["[" * 100_000, '{"status": "completed", "nodes": 5, "error": {"x": 1}}', "[]"])
def test_hostile_runner_report_is_validated(project: Path, forged: str) -> None:
    """A component that leaves a bomb or a wrong-shaped report and exits 0 ends failed, never completed or stuck."""
    from dad_sandbox import AgentRunner

    (project / "sbx_components" / "forger.py").write_text(HOSTILE_COMPONENT)
    from sbx_components.forger import agent

    ctx = RunContext("forger", project, run_root=project.parent / "runs")
    ctx.setup_run()
    policy = load_policy("untrusted").with_overrides(env={"FORGED_REPORT": forged})

    async def go():
        async with IsolatedExecution(ctx, policy) as execution:
            return await execution.run(AgentRunner(agent, ctx))

    result = asyncio.run(go())
    md = read_metadata(ctx.run_dir)
    if forged.startswith("{"):  # well-formed JSON of the wrong types: normalized, and "completed" is believed
        assert md.status == RunStatus.COMPLETED and result.nodes == []
    else:
        assert (md.status, md.reason) == (RunStatus.FAILED, "runner_report"), md.error


# ---------------------------------------------------------------- separate channels


def test_command_output_is_never_parsed_as_runner_records(project: Path) -> None:
    """A plain command printing runner-shaped JSON is stored as its own output, never as runner records or metrics."""
    script = ('echo \'{"event": "node completed", "node": "x.y", "level": "info"}\' >&2; '
              'echo \'{"dad_metric": {"name": "dad.node.success", "value": 1}}\' >&2; '
              "printf '\\036dad:0123456789abcdef {\"event\": \"node failed\"}\\n' >&2; "
              "printf '{\"%s\\n' \"$(head -c 300000 /dev/zero | tr '\\0' '[')\" >&2; echo after >&2")
    ctx, result = run_cmd(project, script)
    assert result.status == RunStatus.COMPLETED, result.error
    recs = records(ctx)
    assert all(r["source"] == "container" for r in recs), [r for r in recs if r["source"] != "container"]
    assert recs[-1]["message"] == "after", "a pathological line stopped the output pump"
    assert not [m for m in records(ctx, "metrics.jsonl") if m.get("source") == "runner"]
    md = read_metadata(ctx.run_dir)
    assert md.output.bytes_kept <= md.output.bytes_total


def test_empty_line_flood_is_capped_on_disk(project: Path) -> None:
    """16 MiB of empty lines cannot become more log file than the policy's output limit."""
    limit = 1 << 20
    ctx, result = run_cmd(project, "head -c 16777216 /dev/zero | tr '\\0' '\\n'", output_limit=limit)
    assert result.status == RunStatus.COMPLETED, result.error
    size = (ctx.trace_dir / "logs.jsonl").stat().st_size
    assert size <= limit + 4096, f"logs.jsonl is {size} bytes for an output limit of {limit}"
    md = read_metadata(ctx.run_dir)
    assert md.output.truncated and md.output.bytes_kept + md.output.bytes_dropped == md.output.bytes_total


# ---------------------------------------------------------------- quotas


def test_deep_paths_cannot_hide_data_from_the_quota(project: Path) -> None:
    """Data under a path longer than PATH_MAX still counts: the run fails with disk_quota, not completed."""
    script = ("d=.; for i in $(seq 1 300); do d=$d/dddddddddddddddddddd; done; mkdir -p $d 2>/dev/null; "
              "cd $d && head -c 50000000 /dev/zero > big.bin; sleep 20")
    ctx, result = run_cmd(project, script, disk_quota="16m")
    assert (result.status, result.reason) == (RunStatus.FAILED, "disk_quota"), result.error
    assert result.duration_seconds < 15


def test_file_count_quota(project: Path) -> None:
    """More entries than the policy's max_files stops the run: failed, file_quota."""
    script = "mkdir f && cd f && for i in $(seq 1 3000); do : > $i; done; sleep 20"
    ctx, result = run_cmd(project, script, max_files=1000)
    assert (result.status, result.reason) == (RunStatus.FAILED, "file_quota"), result.error
    assert "1000" in result.error


def test_unreadable_folder_cannot_hide_data(project: Path) -> None:
    """A folder the run makes unreadable is still measured (repaired or fails closed): no completed run over quota."""
    script = "mkdir -p h/i && head -c 40000000 /dev/zero > h/i/big.bin && chmod 000 h/i h; sleep 20"
    ctx, result = run_cmd(project, script, disk_quota="16m")
    assert (result.status, result.reason) == (RunStatus.FAILED, "disk_quota"), result.error


# ---------------------------------------------------------------- layout


def test_run_sees_no_other_run_in_the_default_layout(project: Path) -> None:
    """With runs under the project (the default ./runs), a run sees neither other runs nor the outcome repo."""
    run_root = project / "runs"
    first, result = run_cmd(project, "echo secret > mine.txt", run_root=run_root)
    assert result.status == RunStatus.COMPLETED
    assert (run_root / "outcome").is_dir()
    script = (f"echo listing:$(ls -A /dad/project/runs | tr '\\n' ' '); cat /dad/project/runs/{first.run_id}/mine.txt; "
              "ls /dad/project/runs/outcome; echo project:$(ls -A /dad/project | sort | tr '\\n' ' ')")
    second, result = run_cmd(project, script, run_root=run_root)
    out = [r["message"] for r in records(second)]
    assert "listing:" in out, out
    assert not any("secret" in line for line in out), out
    assert "project:runs sbx_components sentinel.txt" in out, "the rest of the project stays visible"


def test_run_root_equal_to_project_root_is_refused(project: Path) -> None:
    """A run root that is the project root is refused before any container starts, with a message saying why."""
    from dad_sandbox.errors import DadSandboxError

    with pytest.raises(DadSandboxError, match="project root"):
        run_cmd(project, "true", run_root=project)


def test_static_inputs_and_trace_are_read_only_in_the_container(project: Path) -> None:
    """The run can write neither its static inputs nor anything in .trace/, even as the host's own uid."""
    ctx = RunContext("exec", project, run_root=project.parent / "runs")
    ctx.setup_run()
    ctx.register_node_static_input("n", {"v": 1})
    ctx.read_static_inputs()
    before = (ctx.run_dir / "static_inputs" / "static_inputs.json").read_bytes()
    policy = load_policy("untrusted")
    script = ("echo '{}' > static_inputs/static_inputs.json; rm -f static_inputs/static_inputs.json; "
              "mv static_inputs si2; chmod 000 static_inputs; echo '{\"status\": \"completed\"}' > .trace/dad_metadata.json; "
              "exit 3")

    async def go():
        async with IsolatedExecution(ctx, policy) as execution:
            return await execution.run_command(["sh", "-c", script])

    result = asyncio.run(go())
    assert (result.status, result.exit_code) == (RunStatus.FAILED, 3)
    assert (ctx.run_dir / "static_inputs" / "static_inputs.json").read_bytes() == before
    assert read_metadata(ctx.run_dir).status == RunStatus.FAILED


# ---------------------------------------------------------------- isolation between runs


def test_hostile_collection_does_not_delay_another_runs_deadline(project: Path) -> None:
    """While a hostile run's big, junk-filled files are collected, a victim run with a 2 s deadline is killed on time."""
    hostile = ("yes x | head -c 33554432 > .runner/trace.jsonl; "
               "mkdir -p m && cd m && for i in $(seq 1 20000); do : > $i; done")

    async def go():
        async with Supervisor(max_parallel=4, project_root=project, run_root=project.parent / "runs") as sup:
            h = sup.submit(["sh", "-c", hostile], policy=load_policy("untrusted").with_overrides(memory="1g"))
            await asyncio.sleep(0.5)
            v = sup.submit(["sleep", "60"], policy=load_policy("untrusted").with_overrides(timeout=2))
            return await h.wait(), await v.wait()

    hostile_result, victim = asyncio.run(go())
    assert hostile_result.status == RunStatus.COMPLETED, hostile_result.error
    assert victim.status == RunStatus.TIMED_OUT
    assert victim.duration_seconds < 6, f"the victim ran {victim.duration_seconds:.1f}s for a 2 s deadline"


def test_cli_escapes_terminal_sequences_but_json_keeps_them(project: Path, tmp_path: Path) -> None:
    """On a terminal, `exec` shows escape sequences escaped; --json keeps the output intact."""
    import pty

    code = "import sys; sys.stdout.write('\\x1b[2J\\x1b]52;c;aGk=\\x07done\\n')"
    argv = [*CLI, "exec", "--run-root", str(tmp_path / "runs"), "--", "python3", "-c", code]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI with a terminal as stdout/stderr
        os.chdir(project)
        os.execv(argv[0], argv)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    text = out.decode("utf-8", "replace")
    assert "\\x1b[2J" in text and "\x1b[2J" not in text and "\x1b]52" not in text, text
    proc = subprocess.run([*CLI, "exec", "--json", "--run-root", str(tmp_path / "runs"), "--", "python3", "-c", code],
                          cwd=project, capture_output=True, text=True, timeout=120)
    run_dir = Path(json.loads(proc.stdout)["run_dir"])
    messages = [json.loads(line).get("message") for line in (run_dir / ".trace" / "logs.jsonl").read_text().splitlines()]
    assert "\x1b[2J\x1b]52;c;aGk=\x07done" in messages


def test_deleted_but_open_files_count_against_the_quota(project: Path) -> None:
    """Writing through a descriptor of a deleted file cannot hide the data from the disk quota (runc)."""
    script = "exec 3>hidden; rm hidden; head -c 60000000 /dev/zero >&3; sleep 20"
    ctx, result = run_cmd(project, script, disk_quota="16m")
    assert (result.status, result.reason) == (RunStatus.FAILED, "disk_quota"), result.error
    assert result.duration_seconds < 15
