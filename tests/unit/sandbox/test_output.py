"""Output capture: capped, line-split, never losing a line to bad UTF-8."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dad_sandbox.sandbox._output import MAX_LINE_BYTES, OutputSink


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def sink_for(tmp_path: Path, limit: int = 1 << 20) -> tuple[OutputSink, Path, int]:
    path = tmp_path / "logs.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    return OutputSink(fd, limit=limit, run_id="r"), path, fd


def test_lines_split_across_chunks(tmp_path: Path) -> None:
    """Lines cut across chunks come out whole, one record each, with their stream."""
    sink, path, fd = sink_for(tmp_path)
    sink("stdout", b"hel")
    sink("stdout", b"lo\nwor")
    sink("stderr", b"oops\n")
    sink("stdout", b"ld")
    sink.finish()
    os.close(fd)
    recs = records(path)
    assert [(r["stream"], r["message"]) for r in recs] == [("stdout", "hello"), ("stderr", "oops"), ("stdout", "world")]
    assert recs[-1]["partial"] is True


def test_cap_drops_and_counts(tmp_path: Path) -> None:
    """Past the cap, output is dropped, counted, and flagged truncated."""
    sink, path, fd = sink_for(tmp_path, limit=100)
    for _ in range(50):
        sink("stdout", b"0123456789\n")
    info = sink.finish()
    os.close(fd)
    assert info.truncated and info.bytes_kept <= 100
    assert info.bytes_kept + info.bytes_dropped == info.bytes_total == 550
    assert "truncated" in records(path)[-1]["message"]


def test_invalid_utf8_keeps_the_line(tmp_path: Path) -> None:
    """Invalid UTF-8 is replaced and flagged; the line is kept."""
    sink, path, fd = sink_for(tmp_path)
    sink("stdout", b"ok \xff\xfe bad\n")
    sink.finish()
    os.close(fd)
    (rec,) = records(path)
    assert rec["message"].startswith("ok ") and rec["invalid_utf8"] is True


def test_huge_line_is_split(tmp_path: Path) -> None:
    """A line longer than the per-record maximum is split into partial records."""
    sink, path, fd = sink_for(tmp_path, limit=10 << 20)
    sink("stdout", b"x" * (MAX_LINE_BYTES * 2 + 5) + b"\n")
    sink.finish()
    os.close(fd)
    recs = records(path)
    assert len(recs) == 3 and recs[0]["partial"] and "partial" not in recs[-1]


def test_stderr_tail_is_bounded(tmp_path: Path) -> None:
    """Only the last few KiB of stderr stay in memory."""
    sink, _, fd = sink_for(tmp_path, limit=0)
    for i in range(10_000):
        sink("stderr", f"line {i}\n".encode())
    os.close(fd)
    tail = sink.stderr_tail()
    assert len(tail) <= 8192 and tail.rstrip().endswith("line 9999")


def test_plain_output_is_never_parsed_as_runner_records(tmp_path: Path) -> None:
    """Without a channel, runner-shaped JSON lines are the command's own output."""
    sink, path, fd = sink_for(tmp_path)
    sink("stderr", b'{"event": "node completed", "node": "a.b"}\n{"dad_metric": {"name": "x", "value": 1}}\n')
    sink.finish()
    os.close(fd)
    assert [r["source"] for r in records(path)] == ["container", "container"]


def test_runner_records_need_the_run_channel(tmp_path: Path) -> None:
    """Only lines with this run's channel prefix become runner records; another prefix stays output."""
    path = tmp_path / "logs.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    seen: list[dict] = []
    sink = OutputSink(fd, limit=1 << 20, run_id="r", observer=seen.append, channel="abc")
    sink("stderr", b'\x1edad:abc {"event": "node started", "node": "a.b"}\n')
    sink("stderr", b'\x1edad:zzz {"event": "node failed", "node": "a.b"}\n')
    sink("stderr", b"\x1edad:abc " + b"[" * 60_000 + b"\n")
    sink("stderr", b"still here\n")
    sink.finish()
    os.close(fd)
    recs = records(path)
    assert [r["source"] for r in recs] == ["runner", "container", "container", "container"]
    assert [r["event"] for r in seen] == ["node started"] and recs[-1]["message"] == "still here"


def test_cap_counts_bytes_written_to_disk(tmp_path: Path) -> None:
    """A flood of empty lines cannot write more than the cap to disk; kept + dropped == total."""
    sink, path, fd = sink_for(tmp_path, limit=10_000)
    for _ in range(100):
        sink("stdout", b"\n" * 1000)
    info = sink.finish()
    os.close(fd)
    assert path.stat().st_size <= 10_000 + 1024
    assert info.truncated and info.bytes_kept + info.bytes_dropped == info.bytes_total == 100_000


def test_sink_never_raises(tmp_path: Path) -> None:
    """A failing write (closed descriptor) is counted, never raised into the pump."""
    sink, _, fd = sink_for(tmp_path)
    os.close(fd)
    sink("stdout", b"hello\n")
    assert sink.internal_errors == 1


def test_a_bad_channel_record_drops_one_line_only(tmp_path: Path) -> None:
    """A runner metric with a 400-digit value is refused; output after it keeps flowing."""
    path = tmp_path / "logs.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    sink = OutputSink(fd, limit=1 << 20, run_id="r", metrics_fd=fd, channel="abc")
    sink("stderr", b'\x1edad:abc {"dad_metric": {"name": "x", "value": ' + b"9" * 400 + b"}}\n")
    sink("stdout", b"after\n")
    info = sink.finish()
    os.close(fd)
    assert not info.truncated and records(path)[-1]["message"] == "after"
