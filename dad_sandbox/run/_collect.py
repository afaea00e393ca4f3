"""Collecting what the in-container runner handed back, without trusting it.

The container cannot write ``.trace/`` (it is mounted read-only); the runner writes its spans and
its report into the run's staging folder ``.runner/``. After the container is gone the host reads
them from there - through :mod:`._safe_fs` (no links, no FIFOs), bounded in bytes, line length,
records and time while reading - validates every record with :mod:`._hostile`, and writes only
what passed into ``.trace/``. What was refused is counted and described (a short preview, never
the whole line) in ``.trace/quarantine.jsonl``. Nothing here raises on bad content: a bad file
costs the run its spans, never its honest status.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dad_sandbox._limits import COLLECT_BUDGET_SECONDS, MAX_REPORT_BYTES, MAX_TRACE_BYTES
from dad_sandbox._limits import TRACE_MAX_LINE_BYTES as MAX_LINE_BYTES
from dad_sandbox._limits import TRACE_MAX_RECORDS as MAX_RECORDS
from dad_sandbox.errors import UnsafePathError
from dad_sandbox.run import _hostile, _safe_fs
from dad_sandbox.run._layout import RUNNER_DIR, RUNNER_REPORT_FILE, TRACE_DIR, TRACE_FILE

QUARANTINE_FILE = "quarantine.jsonl"
#: Lines examined per run (good or bad); past them the file is cut, so junk costs bounded CPU.
MAX_LINES = 2 * MAX_RECORDS
#: Quarantine records written (the rest are only counted).
MAX_QUARANTINE_RECORDS = 1_000
PREVIEW_CHARS = 200


@dataclass(slots=True)
class FileReport:
    """What collection found in one file (recorded in the metadata's ``collection``)."""

    lines: int = 0
    kept: int = 0
    bad_lines: int = 0
    bytes_read: int = 0
    bytes_cut: int = 0
    refused: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(slots=True)
class Collected:
    """Everything taken from ``.runner/``: per-file reports and the validated runner report."""

    files: dict[str, FileReport] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    quarantined: int = 0


class _Quarantine:
    """Bounded list of refusal records, written once at the end."""

    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []
        self.count = 0

    def add(self, record: dict[str, object]) -> None:
        self.count += 1
        if len(self.records) < MAX_QUARANTINE_RECORDS:
            self.records.append(record)

    def add_line(self, name: str, line_no: int, reason: str, line: bytes | None, length: int) -> None:
        """A refused line; its preview is made only while records are still being kept."""
        self.count += 1
        if len(self.records) < MAX_QUARANTINE_RECORDS:
            preview = "" if line is None else line[:PREVIEW_CHARS].decode("utf-8", "replace")
            self.records.append({"file": name, "line": line_no, "reason": reason, "bytes": length, "preview": preview})


def _open_staged(runner_fd: int | None, name: str, quarantine: _Quarantine, report: FileReport) -> int | None:
    if runner_fd is None:
        return None
    try:
        return _safe_fs.open_regular(runner_fd, name)
    except FileNotFoundError:
        return None
    except (UnsafePathError, OSError) as exc:
        report.refused = str(exc)
        quarantine.add({"file": f"{RUNNER_DIR}/{name}", "reason": "not a readable regular file", "detail": str(exc)})
        return None


def _collect_spans(runner_fd: int | None, trace_fd: int, quarantine: _Quarantine, deadline: float) -> FileReport:
    """Validated spans from ``.runner/trace.jsonl`` appended to ``.trace/trace.jsonl``, streaming."""
    report = FileReport()
    src = _open_staged(runner_fd, TRACE_FILE, quarantine, report)
    if src is None:
        return report
    out = _safe_fs.open_append(trace_fd, TRACE_FILE)
    pending: list[bytes] = []
    pending_bytes = written = 0
    try:
        size = os.fstat(src).st_size
        for line_no, (line, length, _) in enumerate(
            _safe_fs.iter_lines(src, max_line=MAX_LINE_BYTES, budget=MAX_TRACE_BYTES, deadline=deadline), start=1
        ):
            report.bytes_read += length + 1
            if line is not None and not line.strip():
                continue
            report.lines += 1
            if report.lines > MAX_LINES:
                report.lines -= 1
                report.bytes_read -= length + 1
                break
            if line is None:
                problem = f"line longer than {MAX_LINE_BYTES} bytes"
            elif report.kept >= MAX_RECORDS:
                problem = f"more than {MAX_RECORDS} spans"
            elif not line.lstrip().startswith(b"{"):
                problem = "not a JSON object"
            else:
                obj = _hostile.loads_object(line)
                checked = obj if isinstance(obj, _hostile.Rejected) else _hostile.span(obj)
                encoded = None if isinstance(checked, _hostile.Rejected) else (
                    json.dumps(checked, ensure_ascii=False).encode("utf-8", "replace") + b"\n")
                if isinstance(checked, _hostile.Rejected):
                    problem = checked.reason
                elif written + pending_bytes + len(encoded) > MAX_TRACE_BYTES:  # type: ignore[arg-type]
                    problem = f"the validated trace would pass {MAX_TRACE_BYTES} bytes"
                else:
                    problem = None
                    pending.append(encoded)  # type: ignore[arg-type]
                    pending_bytes += len(encoded)  # type: ignore[arg-type]
                    report.kept += 1
                    if pending_bytes >= 1 << 20:
                        _safe_fs.write_all(out, b"".join(pending))
                        written += pending_bytes
                        pending.clear()
                        pending_bytes = 0
            if problem is not None:
                report.bad_lines += 1
                quarantine.add_line(TRACE_FILE, line_no, problem, line, length)
        _safe_fs.write_all(out, b"".join(pending))
        report.bytes_cut = max(0, size - report.bytes_read)
        if report.bytes_cut:
            why = ("time budget" if time.monotonic() > deadline
                   else f"{MAX_LINES}-line limit" if report.lines >= MAX_LINES else f"{MAX_TRACE_BYTES}-byte limit")
            quarantine.add({"file": TRACE_FILE, "reason": f"file cut at the {why}", "bytes": report.bytes_cut})
    finally:
        os.close(src)
        os.close(out)
    return report


def runner_report(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields of the runner's report the host reads, each of the right type (the rest dropped)."""
    status = obj.get("status") if obj.get("status") in ("completed", "failed") else None
    nodes = []
    raw_nodes = obj.get("nodes")
    for node in raw_nodes[:_hostile.MAX_CONTAINER_ITEMS] if isinstance(raw_nodes, list) else []:
        if not isinstance(node, dict) or _hostile.as_str(node.get("hierarchy_path"), 4096) is None:
            continue
        duration = node.get("duration_seconds")
        nodes.append({
            "hierarchy_path": node["hierarchy_path"],
            "status": _hostile.as_str(node.get("status"), 40),
            "output": node.get("output"),
            "duration_seconds": duration if isinstance(duration, int | float) and not isinstance(duration, bool) else None,
        })
    error = obj.get("error")
    report: dict[str, Any] = {
        "status": status,
        "error": _hostile.clip(error) if error is not None else None,
        "failed_path": _hostile.as_str(obj.get("failed_path"), 4096),
        "nodes": nodes,
    }
    kind = _hostile.as_str(obj.get("kind"), 64)
    if kind is not None:
        report["kind"] = kind
    component = obj.get("component")
    if isinstance(component, dict) and _hostile.as_str(component.get("id"), 200) is not None:
        report["component"] = {"id": _hostile.as_str(component["id"], 200)}
    return report


def _collect_report(runner_fd: int | None, trace_fd: int, quarantine: _Quarantine) -> tuple[FileReport, dict[str, Any] | None]:
    file_report = FileReport()
    src = _open_staged(runner_fd, RUNNER_REPORT_FILE, quarantine, file_report)
    if src is None:
        return file_report, None
    try:
        data = _safe_fs.read_fd_bounded(src, MAX_REPORT_BYTES + 1)
    finally:
        os.close(src)
    file_report.bytes_read = len(data)
    if len(data) > MAX_REPORT_BYTES:
        file_report.bytes_cut = 1
        quarantine.add({"file": RUNNER_REPORT_FILE, "reason": f"larger than {MAX_REPORT_BYTES} bytes"})
        return file_report, None
    if not data.strip():
        return file_report, None
    obj = _hostile.loads_object(data)
    file_report.lines = 1
    if isinstance(obj, _hostile.Rejected):
        file_report.bad_lines = 1
        quarantine.add({"file": RUNNER_REPORT_FILE, "reason": obj.reason, "preview": data[:PREVIEW_CHARS].decode("utf-8", "replace")})
        return file_report, None
    report = runner_report(obj)
    file_report.kept = 1
    _safe_fs.write_atomic(trace_fd, RUNNER_REPORT_FILE, (json.dumps(report, indent=2, default=str) + "\n").encode())
    return file_report, report


def collect_runner_files(run_dir: Path, *, budget: float = COLLECT_BUDGET_SECONDS) -> Collected:
    """Move the runner's spans and report from ``.runner/`` into ``.trace/``, validated and bounded.

    Never raises for anything the run did; a run dir whose ``.trace/`` cannot be opened at all
    (the host's own folder is gone) yields an empty result with ``refused`` set.
    """
    deadline = time.monotonic() + budget
    quarantine = _Quarantine()
    result = Collected()
    try:
        trace_fd = _safe_fs.open_dir(run_dir, TRACE_DIR)
    except (OSError, UnsafePathError) as exc:
        result.files[TRACE_FILE] = FileReport(refused=f"cannot open {TRACE_DIR}/: {exc}")
        return result
    try:
        runner_fd: int | None
        try:
            runner_fd = _safe_fs.open_dir(run_dir, RUNNER_DIR)
        except FileNotFoundError:
            runner_fd = None
        except (OSError, UnsafePathError) as exc:
            runner_fd = None
            quarantine.add({"file": RUNNER_DIR, "reason": "not a plain directory", "detail": str(exc)})
        try:
            result.files[TRACE_FILE] = _collect_spans(runner_fd, trace_fd, quarantine, deadline)
            result.files[RUNNER_REPORT_FILE], result.report = _collect_report(runner_fd, trace_fd, quarantine)
        finally:
            if runner_fd is not None:
                for name in (TRACE_FILE, RUNNER_REPORT_FILE):  # collected: the staged copies go
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=runner_fd)
                os.close(runner_fd)
        result.quarantined = quarantine.count
        if quarantine.records:
            data = b"".join(json.dumps(r).encode() + b"\n" for r in quarantine.records)
            if quarantine.count > len(quarantine.records):
                data += json.dumps({"reason": f"{quarantine.count - len(quarantine.records)} more not listed"}).encode() + b"\n"
            _safe_fs.write_atomic(trace_fd, QUARANTINE_FILE, data)
    finally:
        os.close(trace_fd)
    return result

