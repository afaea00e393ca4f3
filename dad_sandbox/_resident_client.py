"""The thin client side of ``dad-sandbox serve``: stdlib only, so ``dad-sandbox exec`` starts fast.

Everything here must stay importable without pydantic, the Docker SDK or GitPython: the point of
the resident supervisor is that the command-line process pays for none of them.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def default_socket_path() -> Path:
    """``$DAD_SANDBOX_SOCKET``, or a per-user socket in a private directory under /tmp."""
    env = os.environ.get("DAD_SANDBOX_SOCKET")
    if env:
        return Path(env)
    return Path(f"/tmp/dad-sandbox-{os.getuid()}") / "supervisor.sock"


class NoResidentServer(Exception):
    """No resident supervisor serves this request; the CLI then runs it directly, in its own process (isolated all the same)."""


def served_exec(request: dict[str, Any], *, socket_path: Path | None = None) -> Iterator[dict[str, Any]]:
    """Send an exec request to the resident supervisor; yield its answers (run, then result).

    Raises:
        NoResidentServer: no supervisor listens, it serves another project, or it refused the request
            before creating a run.
    """
    path = socket_path or default_socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(0.5)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise NoResidentServer(f"no supervisor at {path}") from exc
        sock.settimeout(None)
        sock.sendall((json.dumps({"op": "exec", **request}) + "\n").encode())
        stream = sock.makefile("rb")
        first = True
        for line in stream:
            answer = json.loads(line)
            if first and "error" in answer:
                raise NoResidentServer(str(answer["error"]))
            first = False
            yield answer
    finally:
        sock.close()
