"""Host readers of run-written data: bounded, total, typed (trust boundary rule 2), without Docker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from dad_sandbox.run import _hostile, iter_jsonl
from dad_sandbox.run._collect import MAX_QUARANTINE_RECORDS, collect_runner_files
from dad_sandbox.run._layout import make_run_dir_skeleton
from dad_sandbox.run._usage import MAX_DEPTH, dir_usage

SPAN = {"trace_id": "t" * 32, "span_id": "s" * 16, "parent_span_id": None, "name": "n",
        "start_time_unix_nano": 5, "end_time_unix_nano": 9, "status": {"code": "STATUS_CODE_OK", "message": None},
        "attributes": {"dad.node.status": "completed"}}


@pytest.mark.parametrize("text", ["[" * 100_000, "{" * 50_000, '{"a":' * 40 + "1" + "}" * 40, "NaN", '{"x": Infinity}'])
def test_bombs_and_non_finite_are_rejected_not_raised(text: str) -> None:
    """Recursion bombs, over-deep values and non-finite numbers come back as Rejected, never an exception."""
    assert isinstance(_hostile.loads(text), _hostile.Rejected)


def test_wide_objects_are_rejected() -> None:
    """A flat object of a million keys is refused (bounded size, not only depth)."""
    assert isinstance(_hostile.loads(json.dumps({str(i): i for i in range(20_000)})), _hostile.Rejected)


@pytest.mark.parametrize("bad", [
    {**SPAN, "trace_id": 5}, {**SPAN, "start_time_unix_nano": "now"}, {**SPAN, "parent_span_id": ["x"]},
    {**SPAN, "end_time_unix_nano": True}, {k: v for k, v in SPAN.items() if k != "name"},
])
def test_spans_of_the_wrong_shape_are_refused(bad: dict) -> None:
    """A span with a field of the wrong type is refused with a reason."""
    assert isinstance(_hostile.span(bad), _hostile.Rejected)


def test_span_normalization_makes_fields_safe_to_index() -> None:
    """Odd but tolerable fields are normalized: bad status becomes UNSET, attributes become scalars."""
    got = _hostile.span({**SPAN, "status": "weird", "attributes": {"a": {"deep": [1]}, "b": 1.5, 3: "x"}, "extra": 1})
    assert not isinstance(got, _hostile.Rejected)
    assert got["status"]["code"] == "STATUS_CODE_UNSET" and got["attributes"] == {"a": '{"deep": [1]}', "b": 1.5}
    assert "extra" not in got


def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    make_run_dir_skeleton(d)
    return d


def test_collect_keeps_valid_spans_and_quarantines_the_rest(tmp_path: Path) -> None:
    """Good spans survive in order; junk, bombs and wrong types are quarantined with a bounded record list."""
    d = run_dir(tmp_path)
    lines = [json.dumps(SPAN), "junk", "[" * 10_000, json.dumps({**SPAN, "name": "b"})] + ["x"] * 5000
    (d / ".runner" / "trace.jsonl").write_text("\n".join(lines) + "\n")
    got = collect_runner_files(d)
    names = [json.loads(line)["name"] for line in (d / ".trace" / "trace.jsonl").read_text().splitlines()]
    assert names == ["n", "b"]
    assert got.files["trace.jsonl"].bad_lines == 5002 and got.quarantined == 5002
    assert len((d / ".trace" / "quarantine.jsonl").read_text().splitlines()) == MAX_QUARANTINE_RECORDS + 1
    assert not (d / ".runner" / "trace.jsonl").exists()


@pytest.mark.parametrize("make", ["symlink", "fifo", "dir"])
def test_collect_refuses_non_regular_files(tmp_path: Path, make: str) -> None:
    """A link, FIFO or folder where the runner's files go is refused without blocking or following."""
    d = run_dir(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text(json.dumps(SPAN) + "\n")
    target = d / ".runner" / "trace.jsonl"
    {"symlink": lambda: target.symlink_to(secret), "fifo": lambda: os.mkfifo(target), "dir": target.mkdir}[make]()
    got = collect_runner_files(d)
    assert got.files["trace.jsonl"].refused and (d / ".trace" / "trace.jsonl").read_text() == ""


def test_collect_with_runner_dir_replaced_by_a_link(tmp_path: Path) -> None:
    """.runner/ swapped for a link to a host folder is never read through."""
    d = run_dir(tmp_path)
    host = tmp_path / "host"
    host.mkdir()
    (host / "trace.jsonl").write_text(json.dumps(SPAN) + "\n")
    os.rmdir(d / ".runner")
    (d / ".runner").symlink_to(host)
    got = collect_runner_files(d)
    assert got.report is None and (d / ".trace" / "trace.jsonl").read_text() == ""
    assert (host / "trace.jsonl").exists(), "nothing is removed through the link"


@pytest.mark.parametrize("report", ["[" * 100_000, '{"status": "completed", "nodes": {"a": 1}, "error": 5}', "[1]", "x" * 10])
def test_runner_report_is_validated(tmp_path: Path, report: str) -> None:
    """A hostile report is refused or normalized to the types the host reads."""
    d = run_dir(tmp_path)
    (d / ".runner" / "runner_report.json").write_text(report)
    got = collect_runner_files(d)
    if got.report is not None:
        assert got.report["nodes"] == [] and isinstance(got.report["error"], str)


def test_iter_jsonl_streams_and_skips_bad_lines(tmp_path: Path) -> None:
    """The display reader skips bad lines and bad spans and stops before a line still being written."""
    d = run_dir(tmp_path)
    trace = d / ".trace" / "trace.jsonl"
    trace.write_text("\n".join([json.dumps(SPAN), "[" * 5000, json.dumps({**SPAN, "span_id": 3})]) + "\n" + json.dumps(SPAN))
    got = list(iter_jsonl(d, "trace.jsonl"))
    assert [rec["name"] for _, rec in got] == ["n"]
    assert got[-1][0] < trace.stat().st_size


def test_usage_counts_below_path_max(tmp_path: Path) -> None:
    """Data under a path longer than PATH_MAX is measured (fd-relative walk)."""
    top = tmp_path / "run"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(100):  # 100 * 60 characters > 4096
        os.mkdir("d" * 59, dir_fd=fd)
        nfd = os.open("d" * 59, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    wfd = os.open("big", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
    os.write(wfd, b"x" * (1 << 20))
    os.close(wfd)
    os.close(fd)
    usage = dir_usage(top)
    assert usage.complete and usage.bytes >= 1 << 20


def test_usage_fails_closed_past_max_depth_and_entries(tmp_path: Path) -> None:
    """Nesting past MAX_DEPTH or more entries than allowed makes the measurement incomplete."""
    top = tmp_path / "run"
    deep = top.joinpath(*["d"] * (MAX_DEPTH + 2))
    deep.mkdir(parents=True)
    assert not dir_usage(top).complete
    many = tmp_path / "many"
    many.mkdir()
    for i in range(50):
        (many / str(i)).touch()
    assert dir_usage(many, max_entries=49).complete is False and dir_usage(many, max_entries=50).complete


def _as_nobody_if_root(tmp_path: Path, check) -> None:
    """Run ``check(folder)`` as uid 65534 when we are root (in a forked child), else directly.

    The folder is made under the system temp dir: pytest's own temp root is private to root.
    """
    if os.geteuid() != 0:
        check(tmp_path)
        return
    folder = Path(tempfile.mkdtemp(prefix="dad-unit-"))
    os.chown(folder, 65534, 65534)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            check(folder)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    subprocess.run(["chmod", "-R", "u+rwx", str(folder)], check=False)
    shutil.rmtree(folder, ignore_errors=True)
    assert os.waitstatus_to_exitcode(status) == 0, "the check failed as a non-root user"


def _unreadable_folder_check(folder: Path) -> None:
    top = folder / "run"
    (top / "h").mkdir(parents=True)
    (top / "h" / "big").write_bytes(b"x" * (1 << 20))
    (top / "h").chmod(0)
    assert not dir_usage(top).complete
    usage = dir_usage(top, repair=True)
    assert usage.complete and usage.bytes >= 1 << 20
    top.chmod(0)  # the run dir itself, too
    assert dir_usage(top, repair=True).complete


def test_usage_repairs_folders_the_run_made_unreadable(tmp_path: Path) -> None:
    """A folder (or the run dir) chmod-ed 000 by a run sharing the host user's uid is given back u+rwx and counted."""
    _as_nobody_if_root(tmp_path, _unreadable_folder_check)


def test_lone_surrogates_never_reach_the_host_writers(tmp_path: Path) -> None:
    """A report or span with lone surrogates (JSON \\ud800) is stored with U+FFFD, never failing to serialize."""
    d = run_dir(tmp_path)
    (d / ".runner" / "runner_report.json").write_text('{"status": "failed", "error": "x\\ud800y", "failed_path": "a\\udcff"}')
    (d / ".runner" / "trace.jsonl").write_text(json.dumps({**SPAN, "name": "n\ud800"}, ensure_ascii=True) + "\n")
    got = collect_runner_files(d)
    assert got.report is not None and got.report["error"] == "x\ufffdy"
    json.dumps(got.report, ensure_ascii=False).encode("utf-8")
    assert json.loads((d / ".trace" / "trace.jsonl").read_text())["name"] == "n\ufffd"


def test_span_attributes_are_bounded() -> None:
    """Huge ints become strings and non-scalar attribute values share a small character budget."""
    got = _hostile.span({**SPAN, "attributes": {"big": 10**400, **{f"a{i}": ["é" * 680] for i in range(185)}}})
    assert not isinstance(got, _hostile.Rejected)
    assert isinstance(got["attributes"]["big"], str)
    assert sum(len(v) for v in got["attributes"].values() if isinstance(v, str)) <= _hostile.MAX_SPAN_ATTRIBUTE_CHARS + 2048
