"""How much disk a run directory uses, measured without following links.

Overlay2 on ext4 gives no per-container disk quota, so the supervisor measures the run dir itself.
Blocks actually allocated are counted (a sparse file costs what it stores), each inode once (hard
links are not counted twice), and the walk is bounded by an entry budget so a directory with
millions of files cannot stall the supervisor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DirUsage:
    bytes: int
    entries: int
    complete: bool


def dir_usage(root: Path, *, max_entries: int = 200_000) -> DirUsage:
    """Allocated bytes and entry count under ``root``; ``complete`` is False if the budget ran out."""
    seen: set[tuple[int, int]] = set()
    total = entries = 0
    stack = [str(root)]
    while stack:
        path = stack.pop()
        try:
            it = os.scandir(path)
        except OSError:
            continue
        with it:
            for entry in it:
                entries += 1
                if entries > max_entries:
                    return DirUsage(total, entries, False)
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                total += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return DirUsage(total, entries, True)
