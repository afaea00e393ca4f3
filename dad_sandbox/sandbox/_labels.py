"""Labels that mark a container as ours: ownership is a fact stored on the container, not a name.

Recovery and ``gc`` find containers only through these labels, never by name prefix.
"""

from __future__ import annotations

import os
import socket

RUN_ID = "dad.run_id"
SUPERVISOR = "dad.supervisor"
SUPERVISOR_HOST = "dad.supervisor.host"
SUPERVISOR_PID = "dad.supervisor.pid"
SUPERVISOR_START = "dad.supervisor.start"
DEADLINE = "dad.deadline"
RUN_DIR = "dad.run_dir"
VERSION = "dad.version"


def process_start_ticks(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux), or None if it is gone.

    Stored beside the pid so a recycled pid is never mistaken for the supervisor that owned a run.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def supervisor_identity() -> dict[str, str]:
    """Host, pid and process start time of this supervisor process."""
    host, pid = socket.gethostname(), os.getpid()
    return {
        SUPERVISOR: f"{host}:{pid}",
        SUPERVISOR_HOST: host,
        SUPERVISOR_PID: str(pid),
        SUPERVISOR_START: process_start_ticks(pid) or "",
    }


def owner_alive(labels: dict[str, str]) -> bool | None:
    """Whether the supervisor named in ``labels`` still runs: True, False, or None when it is on
    another host (not ours to judge)."""
    if labels.get(SUPERVISOR_HOST) != socket.gethostname():
        return None
    try:
        pid = int(labels.get(SUPERVISOR_PID, ""))
    except ValueError:
        return False
    start = process_start_ticks(pid)
    return start is not None and start == labels.get(SUPERVISOR_START, start)
