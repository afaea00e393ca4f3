"""Everything a container writes is untrusted: planted links, FIFOs, huge lines, floods, quotas."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from dad_sandbox import RunStatus, load_policy
from dad_sandbox.run import read_metadata

from ._runs import run_cmd

CLI = [sys.executable, "-m", "dad_sandbox.cli"]


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    path = tmp_path / "host_sentinel.txt"
    path.write_text("host secret")
    path.chmod(0o644)
    return path


def assert_untouched(path: Path) -> None:
    st = path.stat()
    assert path.read_text() == "host secret" and (st.st_uid, st.st_mode & 0o777) == (os.getuid(), 0o644)


@pytest.mark.parametrize("user", ["auto", "root"])
def test_symlinked_metadata_cannot_redirect_host_write(project: Path, sentinel: Path, user: str) -> None:
    """A symlink planted at .trace/dad_metadata.json never makes the host write a host file."""
    script = f"ln -sf {sentinel} .trace/dad_metadata.json 2>/dev/null; ln -sf {sentinel} .trace/logs.jsonl 2>/dev/null; echo done"
    ctx, result = run_cmd(project, script, user=user)
    assert_untouched(sentinel)
    md_path = ctx.trace_dir / "dad_metadata.json"
    assert not md_path.is_symlink() and read_metadata(ctx.run_dir).status == "completed"
    assert result.status == RunStatus.COMPLETED


@pytest.mark.parametrize("user", ["auto", "root"])
def test_trace_dir_cannot_be_replaced(project: Path, tmp_path: Path, user: str) -> None:
    """.trace/ is a read-only mount point in the container: it can be neither moved, linked nor written."""
    host_dir = tmp_path / "host_dir"
    host_dir.mkdir()
    script = (f"mv .trace .trace_moved 2>/dev/null && echo moved; ln -s {host_dir} .trace/x 2>/dev/null && echo linked; "
              "touch .trace/dad_metadata.json 2>/dev/null && echo wrote; chmod 000 .trace 2>/dev/null && echo chmod; "
              "ls -A .trace; echo tried")
    ctx, result = run_cmd(project, script, user=user)
    assert list(host_dir.iterdir()) == []
    md = read_metadata(ctx.run_dir)
    assert (md.status, md.tampering) == ("completed", [])
    out = [json.loads(line).get("message") for line in (ctx.trace_dir / "logs.jsonl").read_text().splitlines()]
    assert out == ["tried"], "the run saw or changed the host's .trace/"
    assert (ctx.trace_dir).is_dir() and not ctx.trace_dir.is_symlink()


@pytest.mark.parametrize("user", ["auto", "root"])
def test_fifo_trace_file_does_not_block(project: Path, user: str) -> None:
    """A FIFO where the runner's trace.jsonl should be is refused and reported; nothing hangs."""
    ctx, result = run_cmd(project, "mkfifo .runner/trace.jsonl; echo ok", user=user)
    md = read_metadata(ctx.run_dir)
    assert md.status == "completed"
    trace = ctx.trace_dir / "trace.jsonl"
    assert trace.is_file() and not trace.is_symlink()
    assert md.collection["trace.jsonl"]["refused"] and md.tampering


SPAN = {"trace_id": "a" * 32, "span_id": "b" * 16, "parent_span_id": None, "name": "node",
        "start_time_unix_nano": 1, "end_time_unix_nano": 2, "status": {"code": "STATUS_CODE_OK", "message": None},
        "attributes": {"dad.node.status": "completed"}}


def test_garbage_in_trace_is_quarantined(project: Path) -> None:
    """Corrupt lines and spans of the wrong shape are quarantined and counted; valid spans survive in order."""
    bad_span = json.dumps({**SPAN, "start_time_unix_nano": "soon", "attributes": []})
    lines = [json.dumps(SPAN), "not json", "[1, 2]", "\\377\\376", bad_span, '{"a":' * 20000,
             json.dumps({**SPAN, "name": "second"})]
    script = "printf '%s\\n' " + " ".join(f"'{line}'" for line in lines) + " >> .runner/trace.jsonl"
    ctx, result = run_cmd(project, script)
    assert result.status == RunStatus.COMPLETED, result.error
    kept = [json.loads(line)["name"] for line in (ctx.trace_dir / "trace.jsonl").read_text().splitlines()]
    assert kept == ["node", "second"]
    report = read_metadata(ctx.run_dir).collection["trace.jsonl"]
    assert (report["bad_lines"], report["kept"]) == (5, 2)
    quarantined = [json.loads(line) for line in (ctx.trace_dir / "quarantine.jsonl").read_text().splitlines()]
    assert [q["line"] for q in quarantined] == [2, 3, 4, 5, 6]
    assert "deeper" in quarantined[-1]["reason"]


def test_hundred_mb_json_line_is_cut_not_loaded(project: Path) -> None:
    """A single 100 MB line is quarantined (not loaded whole) and the file is capped; the run is still final."""
    script = (
        f"printf '%s\\n' '{json.dumps(SPAN)}' >> .runner/trace.jsonl; "
        "python3 -c \"import sys; sys.stdout.write('{\\\"x\\\": \\\"' + 'a' * (100 << 20) + '\\\"}\\n')\" >> .runner/trace.jsonl"
    )
    ctx, result = run_cmd(project, script, memory="1g", disk_quota="2g", max_file_size="1g")
    assert result.status == RunStatus.COMPLETED, result.error
    kept = [json.loads(line)["name"] for line in (ctx.trace_dir / "trace.jsonl").read_text().splitlines()]
    assert kept == ["node"]
    report = read_metadata(ctx.run_dir).collection["trace.jsonl"]
    assert report["bad_lines"] == 1 and report["bytes_cut"] > 0
    reasons = [json.loads(line)["reason"] for line in (ctx.trace_dir / "quarantine.jsonl").read_text().splitlines()]
    assert any("longer than" in r for r in reasons) and any("cut at" in r for r in reasons)


def test_disk_quota_stops_the_run(project: Path) -> None:
    """Filling the run dir past the policy's disk_quota stops the run: failed, disk_quota."""
    script = "head -c 50000000 /dev/zero > big.bin; sleep 30"
    ctx, result = run_cmd(project, script, disk_quota="20m")
    assert (result.status, result.reason) == (RunStatus.FAILED, "disk_quota")
    assert result.duration_seconds < 15
    assert "disk quota" in result.error


def test_max_file_size_is_enforced(project: Path) -> None:
    """A file past max_file_size kills the writer (SIGXFSZ): failed, disk_quota."""
    ctx, result = run_cmd(project, "head -c 5000000 /dev/zero > big.bin", max_file_size="1m")
    assert (result.status, result.reason) == (RunStatus.FAILED, "disk_quota")
    assert (ctx.run_dir / "big.bin").stat().st_size <= 1 << 20


def test_invalid_utf8_flood_keeps_every_line(project: Path) -> None:
    """Invalid UTF-8 output never loses a line or breaks collection."""
    script = "i=0; while [ $i -lt 2000 ]; do printf 'line %d \\377\\376\\n' $i; i=$((i+1)); done"
    ctx, result = run_cmd(project, script)
    assert result.status == RunStatus.COMPLETED
    recs = [json.loads(line) for line in (ctx.trace_dir / "logs.jsonl").read_text().splitlines()]
    assert len([r for r in recs if r.get("source") == "container"]) == 2000
    assert all(r.get("invalid_utf8") for r in recs if r.get("source") == "container")


@pytest.mark.slow
def test_one_gib_output_flood_keeps_supervisor_memory_flat(project: Path) -> None:
    """1 GiB of output: capped on disk, truncated flag set, supervisor RSS stays small."""
    code = "import sys\nline = b'x' * 1023 + b'\\n'\nw = sys.stdout.buffer.write\nfor _ in range(1 << 20): w(line)\n"
    proc = subprocess.run([*CLI, "exec", "--json", "--run-root", str(project / "runs"), "--", "python3", "-c", code],
                          cwd=project, capture_output=True, text=True, timeout=600)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    data = json.loads(proc.stdout)
    assert data["status"] == "completed", proc.stderr
    md = read_metadata(Path(data["run_dir"]))
    assert md.output.truncated and md.output.bytes_total == 1 << 30
    assert md.output.bytes_kept <= load_policy("untrusted").output_limit
    assert (Path(data["run_dir"]) / ".trace" / "logs.jsonl").stat().st_size < 2 * load_policy("untrusted").output_limit
    assert peak_kib < 256 * 1024, f"supervisor peak RSS {peak_kib} KiB: output was buffered"
