"""A resident supervisor: ``dad-sandbox serve`` keeps a Supervisor (and its warm pool) running and
takes runs over a unix socket, so ``dad-sandbox exec`` does not pay Python's imports and a cold
container start on every call (the Docker CLI is likewise a thin client of a resident daemon).

Protocol: one JSON request line per connection, answered by JSON lines: ``{"run_id", "run_dir"}``
as soon as the run exists, then ``{"result": {...}}`` (``RunResult.summary()``) or ``{"error": …}``.
If the client goes away before the result (Ctrl-C), the run is cancelled.

Trust: the socket lives in a directory only its owner can enter (0700) and is itself 0600; the
server checks the peer's uid (SO_PEERCRED) and serves only its own user. A client can only ask for
runs of this server's project and run root, under a policy it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import socket
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dad_sandbox._limits import MAX_REQUEST_BYTES, POOL_READY_WAIT
from dad_sandbox._logging import get_logger
from dad_sandbox._resident_client import default_socket_path
from dad_sandbox._signals import CANCEL_SIGNALS
from dad_sandbox.errors import DadSandboxError
from dad_sandbox.sandbox._policy import load_policy
from dad_sandbox.sandbox._supervisor import Supervisor

log = get_logger(__name__)


def _private_dir(path: Path) -> None:
    """Make (or check) the socket's directory: ours, not a link, mode 0700."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.getuid():
        raise DadSandboxError(f"{path} is not a directory owned by you; refusing to put the supervisor socket there")
    os.chmod(path, 0o700)


class ServerRunning(DadSandboxError):
    """A live ``dad-sandbox serve`` already listens on the socket."""


@contextlib.contextmanager
def _server_lock(path: Path) -> Iterator[None]:
    """Hold ``<socket>.lock`` for the server's life, so two servers starting at once cannot both
    decide the socket is stale (``asyncio`` would silently replace the other's socket)."""
    fd = os.open(f"{path}.lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ServerRunning(
                f"a dad-sandbox supervisor already serves on {path} (it holds {path}.lock); stop it first "
                "(it ends on SIGTERM) or pass --socket PATH for a second one"
            ) from exc
        yield
    finally:
        os.close(fd)


def _claim_socket(path: Path) -> None:
    """Refuse a socket a live server answers on; remove a stale one (its server died)."""
    if not os.path.lexists(path):
        return
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise DadSandboxError(f"{path} exists and is not a socket; remove it or pass --socket PATH")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing a stale supervisor socket", socket=str(path))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    except OSError as exc:
        raise DadSandboxError(f"cannot tell whether a supervisor serves on {path}: {exc}") from exc
    finally:
        probe.close()
    raise ServerRunning(
        f"a dad-sandbox supervisor already serves on {path}; stop it first (it ends on SIGTERM) "
        "or pass --socket PATH for a second one"
    )


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    _, uid, _ = struct.unpack("3i", creds)
    return uid


class ResidentServer:
    """Serves ``exec`` requests for one project with one long-lived :class:`Supervisor`."""

    def __init__(self, supervisor: Supervisor, socket_path: Path) -> None:
        self.supervisor = supervisor
        self.socket_path = socket_path

    async def serve_forever(self) -> None:
        """Serve until SIGTERM, SIGINT or SIGHUP; then cancel every run still going and return.

        Raises:
            ServerRunning: another live server already listens on the socket.
        """
        _private_dir(self.socket_path.parent)
        with _server_lock(self.socket_path):
            _claim_socket(self.socket_path)
            await self._serve()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in CANCEL_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        try:
            async with self.supervisor:
                # Listen once the warm pool is full (or POOL_READY_WAIT passed): an `exec` that finds
                # the socket then gets a warm container, and a stop signal meanwhile is honoured.
                ready = asyncio.ensure_future(self.supervisor.pool_ready(POOL_READY_WAIT))
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
                ready.cancel()
                stopping.cancel()
                if not stop.is_set():
                    await self._listen(stop)
        finally:
            for sig in CANCEL_SIGNALS:
                loop.remove_signal_handler(sig)

    async def _listen(self, stop: asyncio.Event) -> None:
        server = await asyncio.start_unix_server(self._handle, path=str(self.socket_path), limit=MAX_REQUEST_BYTES)
        os.chmod(self.socket_path, 0o600)
        identity = self.socket_path.stat().st_ino  # unlink only our own socket on the way out
        log.info("supervisor serving", socket=str(self.socket_path), project=str(self.supervisor.project_root))
        print(f"dad-sandbox supervisor serving {self.supervisor.project_root} on {self.socket_path}", flush=True)
        try:
            async with server:
                await stop.wait()
                server.close()  # no new runs from here on
                cancelled = self.supervisor.cancel_all()
                if cancelled:
                    log.warning("stopping: cancelled the runs still going", count=cancelled)
        finally:
            with contextlib.suppress(OSError):
                if self.socket_path.stat().st_ino == identity:
                    self.socket_path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send(obj: dict[str, Any]) -> None:
            writer.write((json.dumps(obj, default=str) + "\n").encode())
            await writer.drain()

        try:
            if _peer_uid(writer) not in (os.getuid(), None):
                await send({"error": "this supervisor serves only its own user"})
                return
            try:
                request = json.loads(await reader.readline())
                if not isinstance(request, dict) or request.get("op") != "exec":
                    raise ValueError("expected {'op': 'exec', 'argv': [...]}")
                argv = request.get("argv")
                if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                    raise ValueError("argv must be a non-empty list of strings")
                if Path(request.get("project_root", "")).resolve() != self.supervisor.project_root:  # noqa: ASYNC240
                    await send({"error": "wrong_project", "project_root": str(self.supervisor.project_root)})
                    return
                policy = load_policy(request.get("policy") or "untrusted")
                handle = self.supervisor.submit(argv, policy=policy, timeout=request.get("timeout"),
                                                run_id_prefix=request.get("prefix"))
            except (ValueError, DadSandboxError) as exc:
                await send({"error": str(exc)})
                return
            await send({"run_id": handle.run_id, "run_dir": str(handle.run_dir)})
            done = asyncio.ensure_future(handle.wait())
            gone = asyncio.ensure_future(reader.read())  # EOF: the client went away (Ctrl-C)
            await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not done.done():
                handle.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await done
                return
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                result = done.result()
                await send({"result": result.summary()})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


__all__ = ["ServerRunning", "ResidentServer", "default_socket_path"]
