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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dad_sandbox._limits import MAX_REQUEST_BYTES, POOL_READY_WAIT
from dad_sandbox._logging import get_logger
from dad_sandbox._resident_client import default_socket_path, private_dir
from dad_sandbox._signals import CANCEL_SIGNALS
from dad_sandbox.errors import DadSandboxError
from dad_sandbox.sandbox._policy import load_policy
from dad_sandbox.sandbox._supervisor import Supervisor

log = get_logger(__name__)


_private_dir = private_dir  # the session server and CLI use it under this name


class ServerRunning(DadSandboxError):
    """A live ``dad-sandbox serve`` already listens on the socket."""


@contextlib.contextmanager
def _server_lock(path: Path, inherited_fd: int | None = None) -> Iterator[None]:
    """Hold ``<socket>.lock`` for the server's life, so two servers starting at once cannot both
    decide the socket is stale (``asyncio`` would silently replace the other's socket).

    ``inherited_fd``: the lock file, already locked by the CLI that started this server on first
    use (so no second CLI could start another meanwhile); it must be that very file.
    """
    if inherited_fd is not None:
        fd = inherited_fd
        st, want = os.fstat(fd), os.stat(f"{path}.lock", follow_symlinks=False)
        if (st.st_dev, st.st_ino) != (want.st_dev, want.st_ino):
            os.close(fd)
            raise DadSandboxError(f"--lock-fd {fd} is not {path}.lock; start 'dad-sandbox serve' without --lock-fd")
    else:
        fd = os.open(f"{path}.lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a no-op on the inherited, already held lock
        except BlockingIOError as exc:
            raise ServerRunning(
                f"a dad-sandbox supervisor already serves on {path} (it holds {path}.lock); stop it first "
                "('dad-sandbox serve --stop') or pass --socket PATH for a second one"
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

    def __init__(self, supervisor: Supervisor, socket_path: Path, *, idle_timeout: float | None = None,
                 lock_fd: int | None = None) -> None:
        """``idle_timeout``: end after this many seconds with no request and no run going (None: never)."""
        self.supervisor = supervisor
        self.socket_path = socket_path
        self.idle_timeout = idle_timeout
        self._lock_fd = lock_fd
        self._connections = 0
        self._last_activity = time.monotonic()
        self._started = time.time()
        self._stop: asyncio.Event | None = None
        self._drained = asyncio.Event()  # set while no connection is open

    async def serve_forever(self) -> None:
        """Serve until SIGTERM, SIGINT or SIGHUP; then cancel every run still going and return.

        Raises:
            ServerRunning: another live server already listens on the socket.
        """
        private_dir(self.socket_path.parent)
        with _server_lock(self.socket_path, self._lock_fd):
            _claim_socket(self.socket_path)
            await self._serve()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        stop = self._stop = asyncio.Event()
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
        self._last_activity = time.monotonic()  # idle from now, not from before the pool filled
        log.info("supervisor serving", socket=str(self.socket_path), project=str(self.supervisor.project_root))
        print(f"dad-sandbox supervisor serving {self.supervisor.project_root} on {self.socket_path}", flush=True)
        try:
            async with server:
                idle = await self._until_stopped_or_idle(stop)
                server.close()  # no new runs from here on
                if idle and self._connections:  # a run accepted in the last instant of idleness finishes, not cancelled
                    waits = {asyncio.ensure_future(self._drained.wait()), asyncio.ensure_future(stop.wait())}
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    for w in waits:
                        w.cancel()
                cancelled = self.supervisor.cancel_all()
                if cancelled:
                    log.warning("stopping: cancelled the runs still going", count=cancelled)
        finally:
            with contextlib.suppress(OSError):
                if self.socket_path.stat().st_ino == identity:
                    self.socket_path.unlink()

    async def _until_stopped_or_idle(self, stop: asyncio.Event) -> bool:
        """Wait for a stop request or signal (return False); or, with an idle timeout, until no run
        went on for that long (return True).

        It sleeps until the idle deadline rather than polling, so an idle server costs no CPU.
        """
        while not stop.is_set():
            if self.idle_timeout is None:
                await stop.wait()
                break
            left = self._last_activity + self.idle_timeout - time.monotonic()
            if self._connections == 0 and left <= 0:
                log.info("no request for a while: ending", idle_seconds=self.idle_timeout)
                print(f"dad-sandbox supervisor idle for {self.idle_timeout:g} s: ending", flush=True)
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=left if left > 0 else self.idle_timeout)
        return False

    def status(self) -> dict[str, Any]:
        """What ``dad-sandbox serve --status`` prints."""
        return {"pid": os.getpid(), "socket": str(self.socket_path), "project_root": str(self.supervisor.project_root),
                "run_root": str(self.supervisor.run_root), "started_at": self._started,
                "idle_timeout": self.idle_timeout, "connections": self._connections - 1,  # not this one
                "idle_for": round(time.monotonic() - self._last_activity, 1)}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send(obj: dict[str, Any]) -> None:
            writer.write((json.dumps(obj, default=str) + "\n").encode())
            await writer.drain()

        self._connections += 1
        self._drained.clear()
        is_run = False
        try:
            if _peer_uid(writer) not in (os.getuid(), None):
                await send({"error": "this supervisor serves only its own user"})
                return
            try:
                request = json.loads(await reader.readline())
                if isinstance(request, dict) and request.get("op") == "status":
                    await send(self.status())
                    return
                if isinstance(request, dict) and request.get("op") == "stop":
                    await send({"stopping": True, "pid": os.getpid()})
                    if self._stop is not None:
                        self._stop.set()
                    return
                is_run = True  # only runs keep the server alive, not status probes
                self._last_activity = time.monotonic()
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
            self._connections -= 1
            if not self._connections:
                self._drained.set()
            if is_run:
                self._last_activity = time.monotonic()  # idle time counts from the end of the last run
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


__all__ = ["ServerRunning", "ResidentServer", "default_socket_path"]
