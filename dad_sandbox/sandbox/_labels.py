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
DEADLINE = "dad.deadline"
RUN_DIR = "dad.run_dir"
VERSION = "dad.version"


def supervisor_identity() -> dict[str, str]:
    """Host and pid of this supervisor process."""
    host, pid = socket.gethostname(), str(os.getpid())
    return {SUPERVISOR: f"{host}:{pid}", SUPERVISOR_HOST: host, SUPERVISOR_PID: pid}
