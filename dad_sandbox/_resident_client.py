"""The thin client side of ``dad-sandbox serve``: stdlib only, so ``dad-sandbox exec`` starts fast.

Everything here must stay importable without pydantic, the Docker SDK or GitPython: the point of
the resident supervisor is that the command-line process pays for none of them.

It also starts a resident supervisor on first use (:func:`autostart`), as build servers do: the
first ``exec`` of a project runs in its own process as before and leaves a detached ``serve`` behind
that the next ``exec`` uses; the server ends after some idle minutes. Opt out with
``DAD_SANDBOX_AUTOSTART=0`` (use a running server, never start one) or ``DAD_SANDBOX_NO_SERVER=1``
(never use one).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dad_sandbox._limits import SERVER_AUTO_IDLE_SECONDS as AUTO_IDLE_SECONDS

#: The warm pool an auto-started server keeps (the default ``exec`` policy).
AUTO_WARM_POOL = "untrusted=2"
#: Environment that changes what a server does: a server started under other values is another server.
_FINGERPRINT_PREFIXES = ("DAD_SANDBOX_", "DOCKER_")
_NOT_FINGERPRINTED = {"DAD_SANDBOX_SOCKET", "DAD_SANDBOX_NO_SERVER", "DAD_SANDBOX_AUTOSTART", "DAD_SANDBOX_SERVER_IDLE"}


def socket_dir() -> Path:
    """The per-user private directory that holds resident supervisors' sockets."""
    return Path(f"/tmp/dad-sandbox-{os.getuid()}")


def default_socket_path(project_root: Path | None = None) -> Path:
    """``$DAD_SANDBOX_SOCKET``, or the socket of this project's supervisor in the private per-user directory.

    The name is a hash of the project root, the interpreter, the dad-sandbox version and the
    ``DAD_SANDBOX_*``/``DOCKER_*`` environment, so an ``exec`` never reaches a server started for
    another project, engine or runner image.
    """
    env = os.environ.get("DAD_SANDBOX_SOCKET")
    if env:
        return Path(env)
    from dad_sandbox._version import __version__

    root = (project_root or Path.cwd()).resolve()
    config = sorted((k, v) for k, v in os.environ.items()
                    if k.startswith(_FINGERPRINT_PREFIXES) and k not in _NOT_FINGERPRINTED)
    key = json.dumps([str(root), sys.executable, __version__, config])
    return socket_dir() / f"sv-{hashlib.sha256(key.encode()).hexdigest()[:16]}.sock"


def private_dir(path: Path) -> None:
    """Make (or check) a socket's directory: ours, not a link, mode 0700."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.getuid():
        from dad_sandbox.errors import DadSandboxError

        raise DadSandboxError(f"{path} is not a directory owned by you; refusing to put the supervisor socket there")
    os.chmod(path, 0o700)


class NoResidentServer(Exception):
    """No resident supervisor serves this request; the CLI then runs it directly, in its own process (isolated all the same).

    ``listening`` is False when nothing answered on the socket at all (a server may then be started).
    """

    def __init__(self, message: str, *, listening: bool = True) -> None:
        super().__init__(message)
        self.listening = listening


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(0.5)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise NoResidentServer(f"no supervisor at {path}", listening=False) from exc
    sock.settimeout(None)
    return sock


def served_exec(request: dict[str, Any], *, socket_path: Path | None = None) -> Iterator[dict[str, Any]]:
    """Send an exec request to the resident supervisor; yield its answers (run, then result).

    Raises:
        NoResidentServer: no supervisor listens, it serves another project, or it refused the request
            before creating a run.
    """
    path = socket_path or default_socket_path()
    sock = _connect(path)
    try:
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


def control(op: str, *, socket_path: Path | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Ask the server on ``socket_path`` for ``status`` or to ``stop``; return its one answer.

    Raises:
        NoResidentServer: nothing listens there.
    """
    sock = _connect(socket_path or default_socket_path())
    try:
        sock.settimeout(timeout)
        sock.sendall((json.dumps({"op": op}) + "\n").encode())
        line = sock.makefile("rb").readline(1 << 20)
    except OSError as exc:
        raise NoResidentServer(f"the supervisor did not answer {op!r}: {exc}") from exc
    finally:
        sock.close()
    answer = json.loads(line) if line else {}
    if not isinstance(answer, dict):
        raise NoResidentServer(f"the supervisor answered {op!r} with {answer!r}")
    return answer


def autostart_enabled() -> bool:
    return os.environ.get("DAD_SANDBOX_AUTOSTART", "1") != "0" and os.environ.get("DAD_SANDBOX_NO_SERVER") != "1"


def idle_seconds() -> float:
    raw = os.environ.get("DAD_SANDBOX_SERVER_IDLE")
    try:
        return float(raw) if raw else AUTO_IDLE_SECONDS
    except ValueError:
        return AUTO_IDLE_SECONDS


def autostart(project_root: Path, socket_path: Path) -> int | None:
    """Start a detached ``dad-sandbox serve`` for ``project_root`` on ``socket_path``; return its pid.

    Returns None (and starts nothing) when a server holds the socket's lock: it serves, or is
    starting. The lock is taken here and handed to the child, which holds it for its whole life, so
    two CLIs starting at once start exactly one server, and only that one's CLI says so.
    """
    private_dir(socket_path.parent)
    fd = os.open(f"{socket_path}.lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        log_fd = os.open(f"{socket_path}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dad_sandbox.cli", "serve", "--socket", str(socket_path),
                 "--warm-pool", AUTO_WARM_POOL, "--idle-timeout", str(idle_seconds()), "--lock-fd", str(fd)],
                cwd=project_root, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                start_new_session=True, pass_fds=(fd,), close_fds=True,
                # the server must not inherit the opt-outs' absence as a reason to start more servers
                env={**os.environ, "DAD_SANDBOX_AUTOSTART": "0"},
            )
        finally:
            os.close(log_fd)
        return proc.pid  # detached on purpose: it outlives this process (reaped by init)
    finally:
        os.close(fd)  # the child keeps the lock (same open file description)
