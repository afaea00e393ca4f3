"""Which host process owns a run, and whether it still lives.

Why here, in the run layer: a run dir must name its owner from the moment it exists, before any
container (whose labels carry the same facts) does; recovery and ``gc`` read it to finalize runs
whose supervisor died before it got a container. The pid is stored with the process start time,
so a recycled pid is never mistaken for the owner.
"""

from __future__ import annotations

import os
import socket
from typing import Any


def process_start_ticks(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def owner_identity() -> dict[str, Any]:
    """This process as a run's owner: host, pid and start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": process_start_ticks(pid) or ""}


def process_alive(host: str | None, pid: object, start: str | None) -> bool | None:
    """Whether the process ``host:pid`` (started at ``start`` ticks) still runs.

    Returns None when it is on another host: not ours to judge.
    """
    if host != socket.gethostname():
        return None
    try:
        pid_int = int(str(pid))
    except ValueError:
        return False
    now = process_start_ticks(pid_int)
    return now is not None and (not start or now == start)
