"""Hostile runs aimed at the host side (issue 9): what they write or print, on runc and gVisor.

Each attack here targets the supervisor rather than the kernel: files the host must read after the
run, output it must record, quotas it must measure, other runs it must hide.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ._harness import attack, host_sentinels

COMPLETED = {("completed", None)}


@pytest.fixture
def host(tmp_path: Path) -> Path:
    return host_sentinels(tmp_path)


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def test_junk_trace_lines(project, host, runtime, record_result) -> None:
    """4 million junk lines in the runner's trace: bounded collection, nothing kept, run final."""
    got = attack("junk-trace-lines", project, host, runtime, sh("yes x | head -n 4000000 > .runner/trace.jsonl"),
                 expect=COMPLETED, record=record_result, defends="line/byte/record caps while reading; quarantine bounded")
    assert got.metadata.collection["trace.jsonl"]["kept"] == 0 and got.metadata.collection["trace.jsonl"]["bytes_cut"] > 0


@pytest.mark.parametrize("content", ["[" * 100_000, '{"files": 5}'])
def test_hostile_outcome(project, host, runtime, record_result, content) -> None:
    """A recursion bomb or wrong-typed outcome.json: the good outcomes are still committed."""
    name = "outcome-recursion-bomb" if content.startswith("[") else "outcome-wrong-types"
    script = f"mkdir -p good bad && echo '{{\"a\": 1}}' > good/outcome.json && printf '%s' '{content}' > bad/outcome.json"
    got = attack(name, project, host, runtime, sh(script), expect=COMPLETED, record=record_result,
                 defends="depth/type-checked JSON; per-file skip, commit keeps the rest")
    assert got.metadata.outcome_commit


def test_sparse_outcome_flood(project, host, runtime, record_result) -> None:
    """200 sparse 16 MiB outcome files cost the host at most the outcome read budget."""
    script = "for i in $(seq 1 200); do mkdir -p n$i && truncate -s 16000000 n$i/outcome.json; done"
    attack("sparse-outcome-flood", project, host, runtime, sh(script), expect=COMPLETED, record=record_result,
           defends="1 MiB per outcome.json, 128 MiB read per run")


def test_deep_path_hides_data(project, host, runtime, record_result) -> None:
    """50 MB written below a path longer than PATH_MAX still counts against the quota."""
    script = ("d=.; for i in $(seq 1 300); do d=$d/dddddddddddddddddddd; done; mkdir -p $d; "
              "cd $d && head -c 50000000 /dev/zero > big.bin; sleep 20")
    attack("quota-deep-path", project, host, runtime, sh(script), expect={("failed", "disk_quota")},
           record=record_result, defends="fd-relative walk; deeper than 128 levels fails closed", disk_quota="16m")


def test_file_count_flood(project, host, runtime, record_result) -> None:
    """More files than max_files stops the run."""
    script = "mkdir f && cd f && for i in $(seq 1 3000); do : > $i; done; sleep 20"
    attack("quota-file-count", project, host, runtime, sh(script), expect={("failed", "file_quota")},
           record=record_result, defends="max_files, enforced by the bounded walk", max_files=1000)


def test_unreadable_folder_hides_data(project, host, runtime, record_result) -> None:
    """Data in a folder the run made unreadable still counts against the quota."""
    script = "mkdir -p h/i && head -c 40000000 /dev/zero > h/i/big.bin && chmod 000 h/i h; sleep 20"
    attack("quota-unreadable-folder", project, host, runtime, sh(script), expect={("failed", "disk_quota")},
           record=record_result, defends="root host reads all; same-uid runs' folders repaired, else fails closed",
           disk_quota="16m")


def test_forged_runner_records(project, host, runtime, record_result) -> None:
    """A plain command printing runner records and metrics cannot make them count as the runner's."""
    script = ('echo \'{"event": "node completed", "node": "x"}\' >&2; '
              'echo \'{"dad_metric": {"name": "dad.node.success", "value": 1}}\' >&2; '
              "printf '\\036dad:00000000 {\"event\": \"node failed\"}\\n' >&2")
    got = attack("forged-runner-records", project, host, runtime, sh(script), expect=COMPLETED, record=record_result,
                 defends="records only from lines with the run's channel prefix; commands' output is data")
    recs = [json.loads(line) for line in (got.ctx.trace_dir / "logs.jsonl").read_text().splitlines()]
    assert recs and all(r["source"] == "container" for r in recs)


def test_empty_line_flood(project, host, runtime, record_result) -> None:
    """16 MiB of empty lines cannot become more log file on disk than the output limit."""
    got = attack("output-empty-line-flood", project, host, runtime, sh("head -c 16777216 /dev/zero | tr '\\0' '\\n'"),
                 expect=COMPLETED, record=record_result, defends="output cap counted in bytes written to disk",
                 output_limit="1m")
    assert (got.ctx.trace_dir / "logs.jsonl").stat().st_size <= (1 << 20) + 4096


def test_pathological_stderr_line(project, host, runtime, record_result) -> None:
    """A 1 MiB line of brackets on stderr neither stops the output pump nor loses what follows."""
    got = attack("output-bracket-line", project, host, runtime,
                 sh("head -c 1048576 /dev/zero | tr '\\0' '[' >&2; echo >&2; echo after >&2"),
                 expect=COMPLETED, record=record_result, defends="output never parsed; sink never raises")
    recs = [json.loads(line) for line in (got.ctx.trace_dir / "logs.jsonl").read_text().splitlines()]
    assert recs[-1]["message"] == "after"


def test_peek_at_other_runs(project, host, runtime, record_result) -> None:
    """With runs inside the project (the default ./runs), a run finds no other run and no outcome repository."""
    run_root = project / "runs"
    first = attack("plant-for-peek", project, host, runtime, sh("echo secret > mine.txt"), expect=COMPLETED,
                   record=[], defends="-", run_root=run_root)
    script = (f"ls -A /dad/project/runs | grep . && exit 0; cat /dad/project/runs/{first.ctx.run_id}/mine.txt && exit 0; "
              "ls /dad/project/runs/outcome && exit 0; exit 7")
    attack("peek-other-runs", project, host, runtime, sh(script), expect={("failed", "exit_code")},
           record=record_result, defends="run root masked by an empty read-only tmpfs in the project mount",
           run_root=run_root)


def test_deleted_open_file_hides_data(project, host, runtime, record_result) -> None:
    """Writing through a descriptor of a deleted file still counts against the quota."""
    attack("quota-deleted-open-file", project, host, runtime,
           sh("exec 3>hidden; rm hidden; head -c 60000000 /dev/zero >&3; sleep 20"),
           expect={("failed", "disk_quota")}, record=record_result,
           defends="blocks of deleted files held open by the run's processes (/proc/<pid>/fd) count", disk_quota="16m")
