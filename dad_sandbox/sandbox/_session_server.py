"""The background process behind ``dad-sandbox session start``: it holds one :class:`Session`.

A shell user's session must outlive the command that started it, so ``session start`` launches
this module detached (its own process session, stdin/stdout on /dev/null, stderr to a log file in
the session dir). It starts the session, listens on ``<session dir>/<run id>.sock`` (dir 0700,
socket 0600; the peer's uid must be ours, or the request is refused - fail closed), reports the
run id on the ``--ready-fd`` pipe, and serves until one of:

* a ``stop`` request: the session closes normally, the run ends ``completed``;
* the session's deadline (or its container ending): the run's own status (``timed_out``...);
* SIGTERM, SIGINT or SIGHUP: the session is cancelled (``cancelled``).

Requests (one JSON line per connection; bytes base64): ``info``, ``exec`` (answers output chunks
as they come, then the exit), ``write``, ``read``, ``stop``. Errors answer ``{"error", "kind"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dad_sandbox._limits import SESSION_REPLY_GRACE as REPLY_GRACE
from dad_sandbox._logging import configure_logging, get_logger
from dad_sandbox._session_client import session_dir
from dad_sandbox._signals import CANCEL_SIGNALS
from dad_sandbox.errors import DadSandboxError, SessionError, SessionLimitError
from dad_sandbox.sandbox._resident_server import _peer_uid, _private_dir
from dad_sandbox.sandbox._result import RunResult
from dad_sandbox.sandbox._session import Session

log = get_logger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def error_kind(exc: BaseException) -> str:
    """The ``kind`` of an error answer: what the CLI puts in its JSON error."""
    for cls, kind in ((SessionLimitError, "limit"), (FileNotFoundError, "not_found"),
                      (IsADirectoryError, "is_a_directory"), (PermissionError, "permission"),
                      (SessionError, "session_error"), (ValueError, "invalid_request")):
        if isinstance(exc, cls):
            return kind
    return "sandbox_error"


class SessionServer:
    """Serves one session's requests on a unix socket until stopped, cancelled or past its deadline."""

    def __init__(self, session: Session, directory: Path, log_file: Path | None = None) -> None:
        self.session = session
        self.directory = directory
        self.log_file = log_file
        self._stop = asyncio.Event()
        self._cancel = False
        self._closed: asyncio.Future[RunResult | None] | None = None
        self._replied = asyncio.Event()
        self._stop_requested = False

    def _on_signal(self) -> None:
        self._cancel = True
        self._stop.set()

    async def run(self, ready_fd: int) -> int:
        """Start, report readiness on ``ready_fd`` (then closed), serve; return the process's exit code."""
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        for sig in CANCEL_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal)
        try:
            try:
                _private_dir(self.directory)
                await self.session.start()
            except BaseException as exc:
                _report(ready_fd, {"error": f"the session could not start: {exc}", "kind": error_kind(exc)})
                return 1
            if self._stop.is_set():  # a signal came while starting
                _report(ready_fd, {"error": "the session server was stopped while starting", "kind": "cancelled"})
                await self.session.close(cancel=True)
                return 1
            return await self._serve(ready_fd)
        finally:
            for sig in CANCEL_SIGNALS:
                loop.remove_signal_handler(sig)

    async def _serve(self, ready_fd: int) -> int:
        session = self.session
        path = self.directory / f"{session.run_id}.sock"
        limit = session.limits.write_file * 4 // 3 + (1 << 16)  # a base64 write request at the limit fits
        try:
            server = await asyncio.start_unix_server(self._handle, path=str(path), limit=limit)
        except BaseException as exc:
            _report(ready_fd, {"error": f"could not listen on {path}: {exc}", "kind": "sandbox_error"})
            await session.close(cancel=True)
            return 1
        os.chmod(path, 0o600)
        identity = path.stat().st_ino
        if self.log_file is not None:  # named after the session from now on (the fd stays open)
            with contextlib.suppress(OSError):
                os.replace(self.log_file, self.directory / f"{session.run_id}.log")
        _report(ready_fd, {"session_id": session.run_id, "run_dir": str(session.run_dir), "socket": str(path),
                           "pid": os.getpid()})
        log.info("session serving", run_id=session.run_id, socket=str(path))
        ended = asyncio.ensure_future(session.wait_ended())
        stopping = asyncio.ensure_future(self._stop.wait())
        result: RunResult | None = None
        try:
            await asyncio.wait({ended, stopping}, return_when=asyncio.FIRST_COMPLETED)
            server.close()
            result = await session.close(cancel=self._cancel)
        finally:
            ended.cancel()
            stopping.cancel()
            assert self._closed is not None
            if not self._closed.done():
                self._closed.set_result(result)
            if self._stop_requested:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._replied.wait(), REPLY_GRACE)
            with contextlib.suppress(OSError):
                if path.stat().st_ino == identity:
                    path.unlink()
        log.info("session server ending", run_id=session.run_id, status=result.status.value if result else None)
        return 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send(obj: dict[str, Any]) -> None:
            writer.write((json.dumps(obj, default=str) + "\n").encode())
            await writer.drain()

        try:
            if _peer_uid(writer) != os.getuid():  # unknown peer (no SO_PEERCRED) is refused too
                await send({"error": "this session serves only its own user", "kind": "permission"})
                return
            try:
                req = json.loads(await reader.readline())
                if not isinstance(req, dict):
                    raise ValueError("expected a JSON object with 'op'")
                await self._dispatch(req, send)
            except (ValueError, DadSandboxError, OSError) as exc:
                await send({"error": str(exc), "kind": error_kind(exc)})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _dispatch(self, req: dict[str, Any], send: Send) -> None:
        s = self.session
        op = req.get("op")
        if op == "info":
            assert s.policy is not None
            await send({"session_id": s.run_id, "run_dir": str(s.run_dir), "policy": s.policy.name,
                        "seconds_left": round(s.seconds_left, 1), "pid": os.getpid()})
        elif op == "exec":
            argv = req.get("argv")
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise ValueError("argv must be a non-empty list of strings")
            timeout = req.get("timeout")
            async for event in s.exec_stream(argv, cwd=req.get("cwd"), env=req.get("env"),
                                             timeout=float(timeout) if timeout is not None else None):
                if event.kind == "exit":
                    await send({"exit_code": event.exit_code, "timed_out": event.timed_out,
                                "truncated": event.truncated})
                else:
                    await send({"stream": event.kind, "data": _b64(event.data)})
        elif op == "write":
            await s.write_file(str(req["path"]), base64.b64decode(req.get("data", ""), validate=True))
            await send({"ok": True})
        elif op == "read":
            data = await s.read_file(str(req["path"]), text=False)
            assert isinstance(data, bytes)
            await send({"data": _b64(data)})
        elif op == "stop":
            self._stop_requested = True
            self._stop.set()
            assert self._closed is not None
            result = await asyncio.shield(self._closed)
            try:
                await send({"session_id": s.run_id, "run_dir": str(s.run_dir),
                            "status": result.status.value if result else None})
            finally:
                self._replied.set()
        else:
            raise ValueError(f"unknown op {op!r}: use info, exec, write, read or stop")


def _report(fd: int, obj: dict[str, Any]) -> None:
    """Tell ``session start`` how starting went (one JSON line), then close the pipe."""
    with contextlib.suppress(OSError):
        os.write(fd, (json.dumps(obj, default=str) + "\n").encode())
    with contextlib.suppress(OSError):
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dad-sandbox-session-server")
    parser.add_argument("--policy", default="untrusted")
    parser.add_argument("--timeout")
    parser.add_argument("--project-root", default=".")
    parser.add_argument("--run-root")
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--log-file")
    opts = parser.parse_args(argv)
    configure_logging(json=True, level="info")
    directory = session_dir()
    try:
        session = Session(policy=opts.policy, timeout=opts.timeout, project_root=opts.project_root,
                          run_root=opts.run_root)
    except (ValueError, DadSandboxError) as exc:
        _report(opts.ready_fd, {"error": str(exc), "kind": error_kind(exc)})
        return 1
    return asyncio.run(SessionServer(session, directory, Path(opts.log_file) if opts.log_file else None).run(opts.ready_fd))


if __name__ == "__main__":
    sys.exit(main())
