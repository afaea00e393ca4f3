"""Reading a run's JSONL files (``logs.jsonl``, ``metrics.jsonl``, ``trace.jsonl``) for display.

The one reader the CLI and tools use. It is light to import (no pydantic), streams line by line
with a bound on each line and on the whole file, and never raises for what the file holds: a run
may have written it, or a host bug may have cut it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dad_sandbox._limits import JSONL_MAX_LINE_BYTES as MAX_LINE_BYTES
from dad_sandbox._limits import MAX_JSONL_BYTES
from dad_sandbox.errors import UnsafePathError
from dad_sandbox.run import _hostile, _safe_fs
from dad_sandbox.run._layout import TRACE_DIR, TRACE_FILE


def iter_jsonl(run_dir: Path, name: str, *, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(offset_after_line, record)`` for each JSON object line of ``.trace/<name>`` from byte ``start``.

    Streams the file (never more than one bounded line in memory); bad lines are skipped, and so
    are spans of the wrong shape in ``trace.jsonl`` (those are normalized by :func:`_hostile.span`,
    so callers may index their fields). At most :data:`MAX_JSONL_BYTES` are read. Offsets let a
    follower resume; a last line without its newline is still being written and is left for later.
    """
    try:
        with _safe_fs.opened_dir(run_dir, TRACE_DIR) as dir_fd:
            fd = _safe_fs.open_regular(dir_fd, name)
    except (OSError, UnsafePathError):
        return
    try:
        os.lseek(fd, start, os.SEEK_SET)
        offset = start
        for line, length, terminated in _safe_fs.iter_lines(fd, max_line=MAX_LINE_BYTES, budget=MAX_JSONL_BYTES):
            if not terminated:
                break  # a line still being written
            offset += length + 1
            if line is None:
                continue
            obj = _hostile.loads_object(line)
            if isinstance(obj, _hostile.Rejected):
                continue
            if name == TRACE_FILE:
                obj = _hostile.span(obj)
                if isinstance(obj, _hostile.Rejected):
                    continue
            yield offset, obj
    finally:
        os.close(fd)
