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
import json
import os
import signal
import socket
import struct
from pathlib import Path
from typing import Any

from dad_sandbox._client import default_socket_path
from dad_sandbox._logging import get_logger
from dad_sandbox.errors import DadSandboxError
from dad_sandbox.sandbox._policy import load_policy
from dad_sandbox.sandbox._service import Supervisor

log = get_logger(__name__)
MAX_REQUEST_BYTES = 1 << 20


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


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    _, uid, _ = struct.unpack("3i", creds)
    return uid


class SupervisorServer:
    """Serves ``exec`` requests for one project with one long-lived :class:`Supervisor`."""

    def __init__(self, supervisor: Supervisor, socket_path: Path) -> None:
        self.supervisor = supervisor
        self.socket_path = socket_path

    async def serve_forever(self) -> None:
        _private_dir(self.socket_path.parent)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        async with self.supervisor:
            server = await asyncio.start_unix_server(self._handle, path=str(self.socket_path), limit=MAX_REQUEST_BYTES)
            os.chmod(self.socket_path, 0o600)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            log.info("supervisor serving", socket=str(self.socket_path), project=str(self.supervisor.project_root))
            print(f"dad-sandbox supervisor serving {self.supervisor.project_root} on {self.socket_path}", flush=True)
            try:
                async with server:
                    await stop.wait()
            finally:
                with contextlib.suppress(FileNotFoundError):
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
                if Path(request.get("project_root", "")).resolve() != self.supervisor.project_root:
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


__all__ = ["SupervisorServer", "default_socket_path"]
