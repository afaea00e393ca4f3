"""Validating the JSONL files a container wrote, without trusting them.

Each line must be one JSON object of bounded length. Good lines are kept in order; bad ones
(not JSON, not an object, too long, invalid UTF-8) are counted and described in
``.trace/quarantine.jsonl`` (with a short preview, never the whole line), and never stop the
collection. Files are read through :mod:`._safe_fs` (no links, no FIFOs) and only up to a byte cap;
the rest is cut and counted. The cleaned file replaces the original atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from dad_sandbox.errors import UnsafePathError
from dad_sandbox.run import _safe_fs
from dad_sandbox.run._layout import TRACE_DIR

QUARANTINE_FILE = "quarantine.jsonl"
DEFAULT_MAX_FILE_BYTES = 64 << 20
DEFAULT_MAX_LINE_BYTES = 1 << 20
PREVIEW_CHARS = 200
MAX_QUARANTINE_RECORDS = 10_000


@dataclass(slots=True)
class FileReport:
    """What collection found in one file."""

    lines: int = 0
    kept: int = 0
    bad_lines: int = 0
    bytes_read: int = 0
    bytes_cut: int = 0
    refused: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _lines(fd: int, max_line: int, budget: int):
    """Yield ``(line_bytes_or_None, length)`` reading at most ``budget`` bytes; None = over-long line."""
    buf = bytearray()
    skipping = 0
    read = 0
    while read < budget:
        chunk = os.read(fd, min(1 << 20, budget - read))
        if not chunk:
            break
        read += len(chunk)
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            piece = chunk[start:] if nl < 0 else chunk[start:nl]
            if skipping:
                skipping += len(piece)
            elif len(buf) + len(piece) > max_line:
                skipping = len(buf) + len(piece)
                buf.clear()
            else:
                buf += piece
            if nl < 0:
                break
            if skipping:
                yield None, skipping
                skipping = 0
            else:
                yield bytes(buf), len(buf)
                buf.clear()
            start = nl + 1
    if skipping:
        yield None, skipping
    elif buf:
        yield bytes(buf), len(buf)


def collect_jsonl_files(
    run_dir: Path,
    names: tuple[str, ...],
    *,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_line: int = DEFAULT_MAX_LINE_BYTES,
) -> dict[str, FileReport]:
    """Sanitize each ``.trace/<name>``; write what was quarantined to ``.trace/quarantine.jsonl``."""
    quarantine: list[dict[str, object]] = []
    reports: dict[str, FileReport] = {}
    with _safe_fs.opened_dir(run_dir, TRACE_DIR) as fd:
        for name in names:
            reports[name] = sanitize_jsonl(fd, name, quarantine, max_bytes=max_bytes, max_line=max_line)
        if quarantine:
            data = b"".join(json.dumps(r).encode() + b"\n" for r in quarantine[:MAX_QUARANTINE_RECORDS])
            _safe_fs.write_atomic(fd, QUARANTINE_FILE, data)
    return reports


def sanitize_jsonl(
    trace_fd: int,
    name: str,
    quarantine: list[dict[str, object]],
    *,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_line: int = DEFAULT_MAX_LINE_BYTES,
) -> FileReport:
    """Rewrite ``name`` in the directory ``trace_fd`` keeping only valid, bounded JSON-object lines."""
    report = FileReport()
    try:
        fd = _safe_fs._open_regular(trace_fd, name, os.O_RDONLY)
    except FileNotFoundError:
        _safe_fs.write_atomic(trace_fd, name, b"")
        return report
    except UnsafePathError as exc:
        report.refused = str(exc)
        quarantine.append({"file": name, "reason": "not a regular file", "detail": str(exc)})
        _safe_fs.write_atomic(trace_fd, name, b"")  # replaces the link/FIFO itself, never its target
        return report
    kept: list[bytes] = []
    try:
        size = os.fstat(fd).st_size
        for line_no, (line, length) in enumerate(_lines(fd, max_line, max_bytes), start=1):
            report.lines += 1
            report.bytes_read += length + 1
            reason = None
            if line is None:
                reason = f"line longer than {max_line} bytes"
            elif line.strip():
                try:
                    obj = json.loads(line)
                    if not isinstance(obj, dict):
                        reason = "not a JSON object"
                except (UnicodeDecodeError, ValueError) as exc:
                    reason = f"not valid JSON: {type(exc).__name__}"
            else:
                report.lines -= 1
                continue
            if reason is None:
                kept.append(line)  # type: ignore[arg-type]
                report.kept += 1
            else:
                report.bad_lines += 1
                preview = "" if line is None else line[:PREVIEW_CHARS].decode("utf-8", "replace")
                quarantine.append({"file": name, "line": line_no, "reason": reason, "bytes": length, "preview": preview})
        report.bytes_cut = max(0, size - max_bytes)
    finally:
        os.close(fd)
    if report.bytes_cut:
        quarantine.append({"file": name, "reason": f"file cut at {max_bytes} bytes", "bytes": report.bytes_cut})
    if report.bad_lines or report.bytes_cut:
        _safe_fs.write_atomic(trace_fd, name, b"".join(line + b"\n" for line in kept))
    return report
