"""The client side of ``dad-sandbox session``: stdlib only, so ``session exec`` starts fast.

A session outlives one command, so a background process (``sandbox/_session_server.py``) holds it
and serves requests on ``<session dir>/<session id>.sock``. The session dir is the private
per-user directory ``serve`` uses (``/tmp/dad-sandbox-<uid>``, or ``$DAD_SANDBOX_SESSION_DIR``).
Before connecting, the client checks that the directory is a real directory owned by this user and
closed to everyone else (mode 0700): otherwise another user could put a socket there and receive
the commands and files sent to a session. The server in turn checks the peer's uid.

Protocol: one JSON request line per connection, answered by JSON lines; bytes travel base64.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: What a session id (a run id) may look like: it names a file in the session dir.
SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
CONNECT_TIMEOUT = 2.0


class SessionUnreachable(Exception):
    """No session server answers for this id (it never existed, was stopped, or ended)."""


class UnsafeSessionDir(Exception):
    """The session dir is not private to this user; nothing is sent there."""


def session_dir() -> Path:
    """``$DAD_SANDBOX_SESSION_DIR``, or the per-user private directory under /tmp that ``serve`` uses."""
    env = os.environ.get("DAD_SANDBOX_SESSION_DIR")
    return Path(env) if env else Path(f"/tmp/dad-sandbox-{os.getuid()}")


def check_private(path: Path) -> None:
    """Refuse a session dir that is a link, not ours, or open to others (fail closed).

    Raises:
        UnsafeSessionDir: what is wrong, and what to do.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError as exc:
        raise SessionUnreachable(f"no session dir {path}") from exc
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise UnsafeSessionDir(f"{path} is not a directory of yours with mode 0700; remove it (or set "
                               "DAD_SANDBOX_SESSION_DIR to a private folder) before using sessions")


def socket_path(session_id: str) -> Path:
    if not SESSION_ID.match(session_id):
        raise SessionUnreachable(f"{session_id!r} is not a session id")
    return session_dir() / f"{session_id}.sock"


def request(session_id: str, obj: dict[str, Any], *, timeout: float | None = None) -> Iterator[dict[str, Any]]:
    """Send one request to a session's server and yield its answers.

    Raises:
        SessionUnreachable: no server answers for ``session_id``.
        UnsafeSessionDir: the session dir is not private.
    """
    path = socket_path(session_id)
    check_private(path.parent)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise SessionUnreachable(f"no session {session_id} is running") from exc
        sock.settimeout(timeout)
        sock.sendall((json.dumps(obj) + "\n").encode())
        for line in sock.makefile("rb"):
            yield json.loads(line)
    finally:
        sock.close()


def session_ids() -> list[str]:
    """Ids of the sessions with a socket in the session dir (some may have just ended)."""
    root = session_dir()
    try:
        check_private(root)
    except SessionUnreachable:
        return []
    return sorted(p.name[: -len(".sock")] for p in root.glob("*.sock") if SESSION_ID.match(p.name[: -len(".sock")]))
