"""Sessions: one long-lived container for an agent's tool loop, recorded as one run.

    async with Session(policy="untrusted", timeout="30m") as s:
        await s.write_file("main.py", "print(6 * 7)")
        result = await s.exec(["python3", "main.py"])        # ExecResult(exit_code=0, stdout="42\\n", ...)

Why a run: the session's container is an ordinary run's container whose command is a waiter, so
the supervisor (``ContainerRun``) gives it everything a run has - the policy's limits, the
deadline (enforced by the host and labelled on the container for recovery and ``gc``), metrics,
cancellation, the final status and removal of the container. The session adds processes to that
container with the engine's exec and records each as a span in ``.trace/trace.jsonl``, written by
the host (the container cannot see ``.trace/``).

Per-exec timeouts are enforced inside the container by GNU ``timeout``, which puts the command in
its own process group and signals the whole group (TERM, then KILL one second later), so children
die with it; the host waits a few seconds longer as a backstop and then stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import posixpath
import secrets
import shlex
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from dad_sandbox._limits import SESSION_HOST_BACKSTOP_SECONDS as HOST_BACKSTOP_SECONDS
from dad_sandbox._limits import SESSION_START_TIMEOUT as START_TIMEOUT
from dad_sandbox._limits import SESSION_STOP_TIMEOUT as STOP_TIMEOUT
from dad_sandbox._logging import get_logger
from dad_sandbox.errors import ContainerGone, EngineError, SessionError, SessionLimitError
from dad_sandbox.run import RunContext, RunStatus, _safe_fs
from dad_sandbox.run._layout import TRACE_DIR, TRACE_FILE
from dad_sandbox.runner._trace import Span
from dad_sandbox.sandbox import _ownership
from dad_sandbox.sandbox._container_run import ContainerRun, Launch
from dad_sandbox.sandbox._policy import Policy, load_policy
from dad_sandbox.sandbox._result import RunResult
from dad_sandbox.sandbox._spec import container_run_dir
from dad_sandbox.sandbox._units import parse_duration
from dad_sandbox.sandbox.engine import Engine, ExecSpec

log = get_logger(__name__)

#: The session container's own process: it sleeps until SIGTERM (sent by ``close``), then exits 0,
#: so a session that ends normally is ``completed``. The last word names it in ``ps``.
WAITER = ("/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 86400 & wait $!; done", "dad-session-waiter")
#: Sent by ``close``: PID 1 is the policy's init (it forwards TERM to the waiter) or the waiter itself.
STOP = ("/bin/sh", "-c", "kill -TERM 1")
#: Wrappers the session puts ahead of a command run by absolute path, never through the image's PATH.
TIMEOUT_BIN = "/usr/bin/timeout"
SHELL = "/bin/sh"
#: Exit codes of GNU timeout: 124 after TERM, 137 (128 + KILL) when the group had to be killed.
TIMEOUT_CODES = (124, 137)
ARGV_ATTRIBUTE_LIMIT = 2048

# exit codes of the file helpers (errno values, so they read as what they mean)
_ENOENT, _EACCES, _EISDIR = 2, 13, 21
_INPUT_SCRIPT = '/usr/bin/head -c "$0" | "$@"'
#: At most limit + 1 bytes are read: one more than the limit tells "too big" without a stat, which
#: is not portable (statx fails with EINVAL on gVisor's gofer mounts here).
_READ_SCRIPT = (
    'p=$1; lim=$2; [ -d "$p" ] && exit 21; [ -e "$p" ] || exit 2; [ -r "$p" ] || exit 13; '
    'exec /usr/bin/head -c "$((lim + 1))" -- "$p"'
)
_WRITE_SCRIPT = (
    'p=$1; [ -d "$p" ] && exit 21; d=$(dirname -- "$p"); mkdir -p -- "$d" 2>/dev/null || exit 13; '
    '[ -d "$d" ] || exit 13; cat > "$p" 2>/dev/null || exit 13'
)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Byte limits of one session; each refusal names the limit it hit.

    Args:
        output: bytes kept per stream (stdout, stderr) of one exec; the rest is read and dropped,
            and the result says ``stdout_truncated`` / ``stderr_truncated``.
        read_file: the largest file ``read_file`` returns.
        write_file: the largest content ``write_file`` (and an exec's ``input``) sends.
    """

    output: int = 10 << 20
    read_file: int = 100 << 20
    write_file: int = 100 << 20


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What one exec did. A non-zero ``exit_code`` is the command's failure, not the sandbox's."""

    argv: tuple[str, ...]
    exit_code: int
    stdout_bytes: bytes
    stderr_bytes: bytes
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    duration_seconds: float = 0.0

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass(frozen=True, slots=True)
class ExecEvent:
    """One item of :meth:`Session.exec_stream`: an output chunk, or the final ``exit``."""

    kind: Literal["stdout", "stderr", "exit"]
    data: bytes = b""
    exit_code: int | None = None
    timed_out: bool = False
    truncated: bool = False


@dataclass(slots=True)
class _Capture:
    """Bounded per-stream capture, filled from the engine's pump thread."""

    limit: int
    chunks: dict[str, list[bytes]] = field(default_factory=lambda: {"stdout": [], "stderr": []})
    kept: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    seen: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})

    def take(self, stream: str, data: bytes) -> bytes:
        """Count ``data`` and return the part of it within the limit (possibly empty)."""
        self.seen[stream] += len(data)
        room = self.limit - self.kept[stream]
        part = data[: max(room, 0)]
        self.kept[stream] += len(part)
        return part

    def add(self, stream: str, data: bytes) -> None:
        part = self.take(stream, data)
        if part:
            self.chunks[stream].append(part)

    def truncated(self, stream: str) -> bool:
        return self.seen[stream] > self.kept[stream]

    def text(self, stream: str) -> bytes:
        return b"".join(self.chunks[stream])


class SessionState(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class Session:
    """A sandbox that lives across calls: one container, one run dir, many execs.

    Args:
        policy: a policy name, a TOML path or a :class:`Policy` (``untrusted`` by default).
        timeout: the session's wall-clock deadline (``"30m"``, seconds); the policy's by default.
        project_root: mounted read-only at ``/dad/project``.
        run_root: where the session's run dir goes (default ``<project_root>/runs``).
        engine: the container engine (local Docker by default).
        limits: byte limits of execs and files.
        run_id_prefix: prefix of the run id (default ``session``).
    """

    def __init__(
        self,
        *,
        policy: str | Path | Policy = "untrusted",
        timeout: float | str | None = None,
        project_root: Path | str = ".",
        run_root: Path | str | None = None,
        engine: Engine | None = None,
        limits: SessionLimits | None = None,
        run_id_prefix: str = "session",
    ) -> None:
        self._policy_arg = policy
        self._timeout = parse_duration(timeout) if timeout is not None else None
        self.project_root = Path(project_root).resolve()
        self.run_root = Path(run_root).resolve() if run_root is not None else self.project_root / "runs"
        self._engine = engine
        self.limits = limits or SessionLimits()
        self._prefix = run_id_prefix
        self._state = SessionState.UNOPENED
        self.policy: Policy | None = None
        self.context: RunContext | None = None
        self.container_id: str | None = None
        self.result: RunResult | None = None
        self._task: asyncio.Task[RunResult] | None = None
        self._trace_fd: int | None = None
        self._trace_lock = threading.Lock()
        self._trace_id = secrets.token_hex(16)
        self._deadline = 0.0
        self._user: str | None = None
        self._execs = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def run_id(self) -> str:
        return self._ctx.run_id

    @property
    def run_dir(self) -> Path:
        return self._ctx.run_dir

    @property
    def workdir(self) -> str:
        """The run dir as the container sees it: the working dir of execs and of relative file paths."""
        return container_run_dir(self.run_id)

    @property
    def _ctx(self) -> RunContext:
        if self.context is None:
            raise SessionError("this session is not started: use `async with Session(...) as s:`")
        return self.context

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from dad_sandbox.sandbox.engine._docker import default_engine

            self._engine = default_engine()
        return self._engine

    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        await self.close(cancel=exc_type is not None)

    async def start(self) -> None:
        """Create the run dir and the container, and return once the container runs.

        Raises:
            SessionError: the session was started before, or its container never ran.
            EngineError, PolicyError: no engine, no image, or a bad policy (before any container).
        """
        if self._state is not SessionState.UNOPENED:
            raise SessionError(f"this session is {self._state.value}; make a new Session for each `async with`")
        policy = load_policy(self._policy_arg)
        if self._timeout is not None:
            policy = policy.with_overrides(timeout=self._timeout)
        self.policy = policy
        await self.engine.info()  # fail before making a run dir when no engine answers
        ctx = RunContext("session", self.project_root, run_root=self.run_root)
        ctx.setup_run(run_id_prefix=self._prefix)
        self.context = ctx
        self._state = SessionState.OPEN
        self._user = _ownership.resolve_user(policy.user).docker_user
        with _safe_fs.opened_dir(ctx.run_dir, TRACE_DIR) as fd:
            self._trace_fd = _safe_fs.open_append(fd, TRACE_FILE)
        supervisor = ContainerRun(ctx, policy, self.engine)
        with structlog.contextvars.bound_contextvars(run_id=ctx.run_id):
            self._task = asyncio.create_task(supervisor.run(Launch(command=list(WAITER))))
        try:
            await self._wait_running()
        except BaseException:
            await self.close(cancel=True)
            raise
        self._deadline = time.time() + policy.timeout
        log.info("session started", run_id=ctx.run_id, container=(self.container_id or "")[:12], policy=policy.name)

    async def _wait_running(self) -> None:
        """Until the supervisor recorded the container as running (it has no hook for this: it polls)."""
        assert self._task is not None
        end = time.monotonic() + START_TIMEOUT
        while True:
            md = self._ctx.metadata
            if md.status == RunStatus.RUNNING and md.container_id:
                self.container_id = md.container_id
                return
            if self._task.done():
                result = self._task.result()  # raises what the supervisor raised
                raise SessionError(f"the session's container ended before it could be used: {result.status.value}"
                                   f" ({result.error or 'no error recorded'})")
            if time.monotonic() > end:
                raise SessionError(f"the session's container was not running after {START_TIMEOUT:g}s")
            await asyncio.sleep(0.01)

    async def close(self, *, cancel: bool = False) -> RunResult | None:
        """End the session: stop the waiter (status ``completed``) or, with ``cancel``, kill it (``cancelled``).

        The container is removed and the run's final status written either way; safe to call twice.
        """
        if self._state is not SessionState.OPEN:
            return self.result
        self._state = SessionState.CLOSED
        task = self._task
        try:
            if task is not None and not task.done() and not cancel and self.container_id:
                await self._stop_waiter(task, self.container_id)
            if task is not None and not task.done():
                task.cancel()
            if task is not None:
                try:
                    self.result = await asyncio.shield(task)
                except asyncio.CancelledError:
                    if not task.cancelled():  # we ourselves are being cancelled: let the task finish first
                        with contextlib.suppress(BaseException):
                            self.result = await task
                        raise
                    self.result = RunResult.from_metadata(self._ctx.metadata, self._ctx.run_dir, [])
        finally:
            if self._trace_fd is not None:
                os.close(self._trace_fd)
                self._trace_fd = None
        with contextlib.suppress(Exception):
            self._ctx.record(session={"execs": self._execs, "trace_id": self._trace_id})
        log.info("session closed", run_id=self._ctx.run_id, status=self.result.status.value if self.result else None)
        return self.result

    async def _stop_waiter(self, task: asyncio.Task[RunResult], cid: str) -> None:
        """Ask the waiter to exit 0 and wait for the supervisor to finish, at most ``STOP_TIMEOUT``.

        The stop exec's own stream is not awaited on its own: when PID 1 exits, the engine may end
        the exec's stream late (gVisor) or not at all; the container's exit is what counts.
        """
        stopper = asyncio.create_task(self.engine.exec_stream(cid, ExecSpec(argv=STOP), lambda *_: None))
        end = time.monotonic() + STOP_TIMEOUT
        try:
            done, _ = await asyncio.wait({task, stopper}, timeout=STOP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            if task not in done and stopper in done and stopper.exception() is None:
                await asyncio.wait({task}, timeout=max(end - time.monotonic(), 0))
        finally:
            if not stopper.done():
                stopper.cancel()
            with contextlib.suppress(BaseException):
                await stopper

    @property
    def seconds_left(self) -> float:
        """Seconds until the session's deadline (0 once past it, or before it started)."""
        return max(self._deadline - time.time(), 0.0) if self._deadline else 0.0

    async def wait_ended(self) -> None:
        """Until the session's run ends without ``close`` (its deadline, a kill, the container exiting).

        For a process that holds a session for others (``dad-sandbox session start``) and must
        notice its end.
        """
        if self._task is not None:
            await asyncio.wait({self._task})

    def _require_open(self) -> str:
        if self._state is not SessionState.OPEN or self.container_id is None:
            raise SessionError(f"this session is {self._state.value}: use it inside `async with Session(...) as s:`")
        assert self._task is not None
        if self._task.done():
            md = self._ctx.metadata
            raise SessionError(f"session {md.run_id} has ended ({md.status.value}"
                               f"{': ' + (md.error or '').splitlines()[0] if md.error else ''}); start a new Session")
        return self.container_id

    # ------------------------------------------------------------------ exec

    def _build(
        self, argv: Sequence[str], *, input: str | bytes | None, env: dict[str, str] | None, cwd: str | None,
        user: str | None, timeout: float | None,
    ) -> tuple[ExecSpec, float]:
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("exec needs a non-empty list of strings, e.g. ['python3', '-c', 'print(1)']")
        if user is not None and user != self._user:
            assert self.policy is not None
            raise SessionError(
                f"exec as user {user!r} is refused: policy {self.policy.name!r} runs the session as {self._user} "
                "and gives a run no second identity (no root); leave user unset"
            )
        data = input.encode() if isinstance(input, str) else input
        if data is not None and len(data) > self.limits.write_file:
            raise SessionLimitError(f"exec input of {len(data)} bytes is over the session's limit of "
                                    f"{self.limits.write_file} bytes; write it to a file in parts instead",
                                    limit=self.limits.write_file, size=len(data))
        remaining = self._deadline - time.time()
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        seconds = min(timeout, remaining) if timeout is not None else remaining
        seconds = max(seconds, 0.001)
        if data is not None:
            # The command reads exactly len(data) bytes and then EOF from `head`, not from the engine:
            # closing an exec's stdin does not reach the process under gVisor (runsc).
            argv = (SHELL, "-c", _INPUT_SCRIPT, str(len(data)), *argv)
        wrapped = (TIMEOUT_BIN, "-k", "1", f"{seconds:.3f}s", *argv)
        workdir = posixpath.join(self.workdir, cwd) if cwd else None  # relative: to the session's run dir
        # Always the run's user, named: the container's own user is root when dad-init is its PID 1
        # (it keeps a few capabilities to become the run's user); an exec must never inherit that.
        return ExecSpec(argv=wrapped, env=dict(env or {}), workdir=workdir, user=self._user, stdin=data), seconds

    async def _run(
        self, argv: Sequence[str], capture: _Capture, on_output: Callable[[str, bytes], None], **kwargs: Any
    ) -> tuple[int, bool, float]:
        """Run one exec; returns (exit code, timed out, seconds). Writes its span, with the bytes seen."""
        cid = self._require_open()
        spec, seconds = self._build(argv, **kwargs)
        self._execs += 1
        t0 = time.monotonic()
        span = self._span("session.exec", {"dad.exec.argv": shlex.join(argv)[:ARGV_ATTRIBUTE_LIMIT],
                                           "dad.exec.timeout_seconds": round(seconds, 3),
                                           **({"dad.exec.cwd": kwargs["cwd"]} if kwargs.get("cwd") else {})})
        code: int | None = None
        timed_out = False
        try:
            try:
                done = await asyncio.wait_for(self.engine.exec_stream(cid, spec, on_output),
                                              seconds + HOST_BACKSTOP_SECONDS)
                code = done.exit_code
            except TimeoutError:
                timed_out, code = True, 124
                log.warning("exec outlived its timeout and the in-container kill; stopped reading it",
                            run_id=self.run_id, argv=list(argv)[:8])
            except EngineError as exc:
                # the deadline or a kill can end the container between the state check and the exec
                if isinstance(exc, ContainerGone) or "not running" in str(exc):
                    raise SessionError(f"the session's container has stopped ({exc}); the session has ended; "
                                       "start a new Session") from exc
                raise
            elapsed = time.monotonic() - t0
            if code is None:
                raise SessionError("the engine could not tell how the exec ended (the container stopped?)")
            if code in TIMEOUT_CODES and elapsed >= seconds * 0.98:
                timed_out = True
            span.attributes.update({"dad.exec.exit_code": code, "dad.exec.timed_out": timed_out})
            span.status_code = "OK" if code == 0 and not timed_out else "ERROR"
            if span.status_code == "ERROR":
                span.status_message = "timed out" if timed_out else f"exit code {code}"
            return code, timed_out, elapsed
        except BaseException as exc:
            span.set_error(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            span.attributes.update({"dad.exec.stdout_bytes": capture.seen["stdout"],
                                    "dad.exec.stderr_bytes": capture.seen["stderr"],
                                    "dad.exec.truncated": capture.truncated("stdout") or capture.truncated("stderr")})
            self._end_span(span)

    async def exec(
        self,
        argv: Sequence[str],
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``argv`` in the session's container and return its exit code and bounded output.

        ``timeout`` (seconds, default: what is left of the session) kills the process and its
        children; the result then has ``timed_out=True``. Output past ``limits.output`` per stream
        is read and dropped, and flagged as truncated.

        Raises:
            SessionError: the session has ended, or ``user`` is not the policy's user.
            SessionLimitError: ``input`` is over ``limits.write_file``.
        """
        capture = _Capture(self.limits.output)
        code, timed_out, elapsed = await self._run(argv, capture, capture.add, input=input, env=env, cwd=cwd, user=user,
                                                   timeout=timeout)
        return ExecResult(
            argv=tuple(argv), exit_code=code, stdout_bytes=capture.text("stdout"), stderr_bytes=capture.text("stderr"),
            stdout_truncated=capture.truncated("stdout"), stderr_truncated=capture.truncated("stderr"),
            timed_out=timed_out, duration_seconds=round(elapsed, 6),
        )

    async def exec_stream(
        self,
        argv: Sequence[str],
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[ExecEvent]:
        """Run ``argv`` and yield its output as it comes, then one ``exit`` event.

        Within ``limits.output`` per stream; beyond it chunks are dropped and the ``exit`` event says
        ``truncated``. Leaving the loop early stops reading (the process runs on until its timeout).
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ExecEvent | None] = asyncio.Queue()
        capture = _Capture(self.limits.output)

        def on_output(stream: str, data: bytes) -> None:
            part = capture.take(stream, data)
            if part:
                loop.call_soon_threadsafe(queue.put_nowait, ExecEvent(kind=stream, data=part))  # type: ignore[arg-type]

        async def run() -> tuple[int, bool, float]:
            try:
                return await self._run(argv, capture, on_output, input=input, env=env, cwd=cwd, user=user, timeout=timeout)
            finally:
                # after the pump's last call_soon_threadsafe, so the end marker comes after every chunk
                loop.call_soon(queue.put_nowait, None)

        task = asyncio.create_task(run())
        try:
            while (event := await queue.get()) is not None:
                yield event
            code, timed_out, _ = await task
            truncated = capture.truncated("stdout") or capture.truncated("stderr")
            yield ExecEvent(kind="exit", exit_code=code, timed_out=timed_out, truncated=truncated)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    # ------------------------------------------------------------------ files

    async def write_file(self, path: str, content: str | bytes) -> None:
        """Write ``content`` to ``path`` in the container (relative: to its working dir), making parent folders.

        Written by the session's user, so the policy's permissions and read-only root apply; the
        run dir, ``/tmp`` and other tmpfs of the policy are writable.

        Raises:
            SessionLimitError: over ``limits.write_file``.
            IsADirectoryError, PermissionError: as the names say.
        """
        data = content.encode() if isinstance(content, str) else bytes(content)
        if len(data) > self.limits.write_file:
            raise SessionLimitError(f"refused to write {len(data)} bytes to {path!r}: over the session's limit of "
                                    f"{self.limits.write_file} bytes (SessionLimits.write_file)",
                                    limit=self.limits.write_file, size=len(data))
        result = await self.exec([SHELL, "-c", _WRITE_SCRIPT, "dad-write", path], input=data)
        self._file_error(result, path, "write")

    async def read_file(self, path: str, text: bool = True, *, max_size: int | None = None) -> str | bytes:
        """Read ``path`` from the container (relative: to its working dir), at most ``max_size`` bytes.

        ``max_size`` defaults to ``limits.read_file``.

        Raises:
            SessionLimitError: the file is over the limit (at most one byte more than it is read).
            FileNotFoundError, IsADirectoryError, PermissionError: as the names say.
            UnicodeDecodeError: ``text=True`` and the file is not UTF-8.
        """
        limit = self.limits.read_file if max_size is None else max_size
        capture = _Capture(limit + 1)
        code, timed_out, _ = await self._run([SHELL, "-c", _READ_SCRIPT, "dad-read", path, str(limit)], capture, capture.add,
                                             input=None, env=None, cwd=None, user=None, timeout=None)
        result = ExecResult(argv=(), exit_code=code, stdout_bytes=capture.text("stdout"),
                            stderr_bytes=capture.text("stderr"), timed_out=timed_out)
        self._file_error(result, path, "read")
        data = result.stdout_bytes
        if len(data) > limit:
            raise SessionLimitError(f"refused to read {path!r}: it holds more than the limit of {limit} bytes "
                                    "(SessionLimits.read_file, or max_size)", limit=limit)
        return data.decode("utf-8") if text else data

    def _file_error(self, result: ExecResult, path: str, what: str) -> None:
        code = result.exit_code
        if code == 0 and not result.timed_out:
            return
        if code == _ENOENT:
            raise FileNotFoundError(2, "no such file in the session", path)
        if code == _EACCES:
            raise PermissionError(13, f"the session's user may not {what} it", path)
        if code == _EISDIR:
            raise IsADirectoryError(21, "is a directory", path)
        raise SessionError(f"could not {what} {path!r} in the session (exit code {code}"
                           f"{', timed out' if result.timed_out else ''}): {result.stderr.strip()[:500]}")

    # ------------------------------------------------------------------ spans

    def _span(self, name: str, attributes: dict[str, Any]) -> Span:
        return Span(name, self._trace_id, secrets.token_hex(8), None,
                    {"dad.run_id": self.run_id, "dad.session": True, **attributes})

    def _end_span(self, span: Span) -> None:
        span.end_time_unix_nano = time.time_ns()
        span.attributes["dad.duration_seconds"] = round((span.end_time_unix_nano - span.start_time_unix_nano) / 1e9, 6)
        line = (json.dumps(span.to_json(), default=str) + "\n").encode()
        with self._trace_lock:
            if self._trace_fd is not None:
                os.write(self._trace_fd, line)


__all__ = ["ExecEvent", "ExecResult", "Session", "SessionLimits", "SessionState"]
