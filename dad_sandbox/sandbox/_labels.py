"""Labels that mark a container as ours: ownership is a fact stored on the container, not a name.

Recovery and ``gc`` find containers only through these labels, never by name prefix.
"""

from __future__ import annotations

import os
import socket

from dad_sandbox.run._owner import process_alive, process_start_ticks

RUN_ID = "dad.run_id"
SUPERVISOR = "dad.supervisor"
SUPERVISOR_HOST = "dad.supervisor.host"
SUPERVISOR_PID = "dad.supervisor.pid"
SUPERVISOR_START = "dad.supervisor.start"
DEADLINE = "dad.deadline"
RUN_DIR = "dad.run_dir"
VERSION = "dad.version"


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
    return process_alive(labels.get(SUPERVISOR_HOST), labels.get(SUPERVISOR_PID, ""), labels.get(SUPERVISOR_START))
