"""Finding and reading runs under a run root, for the CLI and tools (host side, read-only).

Run dirs were written by untrusted code, so every read goes through the bounded, link-refusing
helpers, and one unreadable run never stops a listing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dad_sandbox.errors import RunError, UnsafePathError
from dad_sandbox.run import _safe_fs
from dad_sandbox.run._ids import is_valid_run_id
from dad_sandbox.run._layout import TRACE_DIR
from dad_sandbox.run._metadata import RunMetadata, read_metadata

MAX_JSONL_BYTES = 256 << 20


def find_run(run_root: Path, run_id: str) -> Path:
    """The directory of ``run_id`` under ``run_root``.

    Raises:
        RunError: not a run id, or no such run (the message lists the newest ones).
    """
    if not is_valid_run_id(run_id):
        raise RunError(f"{run_id!r} is not a run id (e.g. run_20261127_101500_a1b2c3)")
    path = run_root / run_id
    if not path.is_dir() or path.is_symlink():
        recent = [m.run_id for m in list_runs(run_root)[:5]]
        hint = f"; recent runs: {', '.join(recent)}" if recent else f"; no runs under {run_root}"
        raise RunError(f"no run {run_id} under {run_root}{hint}")
    return path


def list_runs(run_root: Path) -> list[RunMetadata]:
    """Metadata of every readable run under ``run_root``, newest first."""
    if not run_root.is_dir():
        return []
    out = []
    for entry in run_root.iterdir():
        if not is_valid_run_id(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            out.append(read_metadata(entry))
        except (RunError, OSError):
            continue
    return sorted(out, key=lambda m: m.created_at, reverse=True)


def iter_jsonl(run_dir: Path, name: str, *, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(offset_after_line, record)`` for each JSON object line of ``.trace/<name>`` from byte ``start``.

    Bad lines are skipped; at most :data:`MAX_JSONL_BYTES` are read. Offsets let a follower resume.
    """
    try:
        with _safe_fs.opened_dir(run_dir, TRACE_DIR) as fd:
            data, _ = _safe_fs.read_bounded(fd, name, MAX_JSONL_BYTES)
    except (FileNotFoundError, UnsafePathError):
        return
    offset = start
    view = data[start:]
    for line in view.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # a line still being written
        offset += len(line)
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield offset, obj
