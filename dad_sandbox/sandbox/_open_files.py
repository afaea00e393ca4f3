"""Disk held by files a run deleted but keeps open: invisible to any walk of the run dir.

A run can ``open`` a file in its run dir, ``unlink`` it and go on writing through the descriptor:
the blocks stay allocated on the host's filesystem, but no name leads to them. Under runc the
container's processes are host processes, so the host can look at their open descriptors in
``/proc/<pid>/fd`` (root, or the same uid while the process is dumpable) and add up the blocks of
regular files whose link count is 0. Under gVisor the run's files live behind the sandbox's own
kernel and no such host descriptor exists. Best effort and bounded: a process that cannot be
looked at is skipped, and more descriptors than :data:`MAX_FDS` make the answer incomplete (the
supervisor then fails closed, as for an incomplete walk).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_FDS = 20_000
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def container_pids(pid1: int) -> list[int]:
    """Host pids of every process in the container whose first process is ``pid1`` (its cgroup)."""
    try:
        lines = Path(f"/proc/{pid1}/cgroup").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers in ("pids", ""):  # cgroup v1 pids controller, or the v2 unified hierarchy
            base = _CGROUP_ROOT / "pids" if controllers == "pids" else _CGROUP_ROOT
            try:
                return [int(p) for p in (base / path.lstrip("/") / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                continue
    return [pid1]


def deleted_open_bytes(pid1: int | None) -> tuple[int, bool]:
    """``(bytes, complete)``: blocks of deleted regular files the container's processes hold open."""
    if not pid1:
        return 0, True
    seen: set[tuple[int, int]] = set()
    total = fds = 0
    for pid in container_pids(pid1):
        try:
            it = os.scandir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or not ours to look at
        with it:
            for entry in it:
                fds += 1
                if fds > MAX_FDS:
                    return total, False
                try:
                    st = os.stat(entry.path)  # follows the magic link to the open file itself
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_nlink == 0 and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total, True
