"""Test helpers that ship with dad-sandbox: an in-memory container engine.

:class:`FakeEngine` implements the :class:`~dad_sandbox.sandbox.engine.Engine` interface without
Docker, so code above the engine (the supervisor, the service, your own integrations) can be
tested in milliseconds. It does not run programs: a container's command is a tiny script of steps
it simulates::

    ["print", "hello"]      a line on stdout          ["eprint", "oops"]   a line on stderr
    ["sleep", "2.5"]        take that long            ["exit", "3"]        exit with code 3
    ["oom"]                 OOM-killed (137)          ["oom-child"]        a child OOM-killed, exit 0
    ["signal", "SIGSEGV"]   killed by a signal

Steps are separated by ``";"``: ``["print", "hi", ";", "exit", "1"]``. Processes exec'd into a
running container (sessions) run the same steps, plus ``["cat"]`` (stdin to stdout); a leading
``timeout -k K Ns`` is honoured (exit 124), and ``/bin/sh -c "kill -TERM 1"`` ends the container with 0.
A container created with
``stdin_open`` waits for a JSON line ``{"argv": [...]}`` on stdin and then runs that script, as the
warm pool's waiter does. What Docker itself does (isolation, OOM, signals) is tested against the
real engine in ``tests/integration``; this engine only stands in for it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dad_sandbox.errors import ContainerGone, EngineError, EngineUnavailable, ImageNotFound
from dad_sandbox.sandbox.engine import (
    ContainerSpec,
    ContainerState,
    Engine,
    ExecExit,
    ExecSpec,
    OutputCallback,
    StdinHandle,
)

_ids = itertools.count(1)


@dataclass
class FakeContainer:
    """One simulated container."""

    id: str
    spec: ContainerSpec
    status: str = "created"
    exit_code: int | None = None
    oom_killed: bool = False
    output: list[tuple[str, bytes]] = field(default_factory=list)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    new_output: asyncio.Event = field(default_factory=asyncio.Event)
    stdin: asyncio.Future[bytes] | None = None
    task: asyncio.Task[None] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class FakeEngine(Engine):
    """An in-memory :class:`Engine`. ``images`` are the image references it "has"."""

    name = "fake"

    def __init__(self, images: set[str] | None = None, *, available: bool = True) -> None:
        self.images = images if images is not None else {"*"}
        self.available = available
        self.containers: dict[str, FakeContainer] = {}
        self.calls: list[str] = []
        self.execs: list[ExecSpec] = []

    # ---- helpers
    def _check(self, what: str) -> None:
        self.calls.append(what)
        if not self.available:
            raise EngineUnavailable(f"{what}: the fake engine is switched off")

    def _get(self, container_id: str) -> FakeContainer:
        try:
            return self.containers[container_id]
        except KeyError:
            raise ContainerGone(f"no container {container_id}") from None

    def _exit(self, c: FakeContainer, code: int, *, oom: bool = False) -> None:
        if c.status == "exited":
            return
        c.status, c.exit_code, c.oom_killed = "exited", code, oom or c.oom_killed
        c.finished_at = datetime.now(UTC)
        c.exited.set()
        c.new_output.set()

    async def _script(self, c: FakeContainer, argv: list[str]) -> None:
        steps = [list(g) for k, g in itertools.groupby(argv, lambda a: a == ";") if not k]
        code = 0
        for step in steps:
            op, args = step[0], step[1:]
            if op in ("print", "eprint"):
                c.output.append(("stdout" if op == "print" else "stderr", (" ".join(args) + "\n").encode()))
                c.new_output.set()
            elif op == "sleep":
                await asyncio.sleep(float(args[0]))
            elif op == "exit":
                code = int(args[0])
                break
            elif op == "oom":
                return self._exit(c, 137, oom=True)
            elif op == "oom-child":
                c.oom_killed = True
            elif op == "signal":
                return self._exit(c, 128 + signal.Signals[args[0]].value)
            else:
                c.output.append(("stderr", f"fake engine: unknown step {op!r}\n".encode()))
                code = 127
                break
        self._exit(c, code)

    async def _run(self, c: FakeContainer) -> None:
        from dad_sandbox.sandbox._session import WAITER

        argv = list(c.spec.command)
        if argv and argv[0] == "/usr/local/bin/dad-init" and "--" in argv:
            argv = argv[argv.index("--") + 1 :]  # the in-container init runs the script as its child
        if tuple(argv) == WAITER:  # a session's container: it waits until it is stopped or killed
            await c.exited.wait()
            return None
        if c.spec.stdin_open:
            assert c.stdin is not None
            line = await c.stdin
            if not line.strip():
                return self._exit(c, 0)
            argv = json.loads(line)["argv"]
        await self._script(c, argv)

    # ---- the Engine interface
    async def info(self) -> dict[str, Any]:
        self._check("info")
        return {"engine": "fake", "version": "0", "api_version": "0", "kernel": "fake"}

    async def image_id(self, ref: str) -> str:
        self._check("image_id")
        if "*" not in self.images and ref not in self.images:
            raise ImageNotFound(f"image {ref!r} is not on the fake engine")
        return f"sha256:fake-{ref}"

    async def create(self, spec: ContainerSpec) -> str:
        self._check("create")
        await self.image_id(spec.image)
        cid = f"fake{next(_ids):060d}"
        self.containers[cid] = FakeContainer(cid, spec)
        if spec.stdin_open:
            self.containers[cid].stdin = asyncio.get_running_loop().create_future()
        return cid

    async def start(self, container_id: str) -> None:
        self._check("start")
        c = self._get(container_id)
        c.status, c.started_at = "running", datetime.now(UTC)
        c.task = asyncio.create_task(self._run(c))

    async def wait(self, container_id: str, timeout: float) -> int | None:
        self._check("wait")
        c = self._get(container_id)
        try:
            await asyncio.wait_for(c.exited.wait(), timeout=max(timeout, 0))
        except TimeoutError:
            return None
        return c.exit_code

    async def inspect(self, container_id: str) -> ContainerState:
        self._check("inspect")
        c = self._get(container_id)
        return ContainerState(
            id=c.id, status=c.status, running=c.status == "running", exit_code=c.exit_code,
            oom_killed=c.oom_killed, started_at=c.started_at, finished_at=c.finished_at,
            image_id=f"sha256:fake-{c.spec.image}", labels=dict(c.spec.labels),
        )

    async def kill(self, container_id: str) -> None:
        self._check("kill")
        c = self._get(container_id)
        if c.task is not None:
            c.task.cancel()
        if c.status == "running":
            self._exit(c, 137)

    async def remove(self, container_id: str) -> None:
        self._check("remove")
        c = self.containers.pop(container_id, None)
        if c is not None:
            if c.task is not None:
                c.task.cancel()
            c.new_output.set()  # end any output stream still attached

    async def stream_output(
        self, container_id: str, on_output: OutputCallback, *, on_attached: Callable[[], None] | None = None
    ) -> None:
        c = self._get(container_id)
        if on_attached is not None:
            on_attached()
        sent = 0
        while True:
            while sent < len(c.output):
                stream, data = c.output[sent]
                on_output(stream, data)
                sent += 1
            if c.status == "exited" or container_id not in self.containers:
                return
            c.new_output.clear()
            await c.new_output.wait()

    async def open_stdin(self, container_id: str) -> StdinHandle:
        self._check("open_stdin")
        c = self._get(container_id)
        if c.stdin is None:
            raise EngineError(f"container {container_id} was not created with stdin_open")
        return StdinHandle(container_id)

    def _stdin_of(self, handle: StdinHandle) -> asyncio.Future[bytes] | None:
        if handle.closed:
            raise ValueError(f"the stdin of container {handle.container_id} was already written or closed")
        handle.closed = True
        c = self.containers.get(handle.container_id)
        return None if c is None or c.stdin is None or c.stdin.done() else c.stdin

    async def write_stdin(self, handle: StdinHandle, data: bytes) -> None:
        self._check("write_stdin")
        stdin = self._stdin_of(handle)
        if stdin is None:
            raise EngineError(f"writing to the stdin of container {handle.container_id} failed: it is gone")
        stdin.set_result(data)

    async def close_stdin(self, handle: StdinHandle) -> None:
        if not handle.closed and (stdin := self._stdin_of(handle)) is not None:
            stdin.set_result(b"")

    async def exec_stream(self, container_id: str, spec: ExecSpec, on_output: OutputCallback) -> ExecExit:
        from dad_sandbox.sandbox._session import _INPUT_SCRIPT, SHELL, STOP, TIMEOUT_BIN

        self._check("exec")
        c = self._get(container_id)
        if c.status != "running":
            raise ContainerGone(f"container {container_id} is not running")
        self.execs.append(spec)
        argv = list(spec.argv)
        if tuple(argv) == STOP:
            self._exit(c, 0)
            return ExecExit(exit_code=0)
        seconds: float | None = None
        if argv[:1] == [TIMEOUT_BIN]:
            seconds, argv = float(argv[3].rstrip("s")), argv[4:]
        if argv[:3] == [SHELL, "-c", _INPUT_SCRIPT]:  # input through `head -c N`: the fake passes it directly
            argv = argv[4:]
        try:
            code = await asyncio.wait_for(self._exec_script(argv, spec.stdin, on_output), seconds)
        except TimeoutError:
            code = 124
        return ExecExit(exit_code=code)

    @staticmethod
    async def _exec_script(argv: list[str], stdin: bytes | None, on_output: OutputCallback) -> int:
        for step in [list(g) for k, g in itertools.groupby(argv, lambda a: a == ";") if not k]:
            op, args = step[0], step[1:]
            if op in ("print", "eprint"):
                on_output("stdout" if op == "print" else "stderr", (" ".join(args) + "\n").encode())
            elif op == "cat":
                on_output("stdout", stdin or b"")
            elif op == "sleep":
                await asyncio.sleep(float(args[0]))
            elif op == "exit":
                return int(args[0])
            else:
                on_output("stderr", f"fake engine: unknown step {op!r}\n".encode())
                return 127
        return 0

    async def stats(self, container_id: str) -> dict[str, Any] | None:
        c = self.containers.get(container_id)
        if c is None or c.status != "running":
            return None
        return {"memory_bytes": 1 << 20, "memory_max_bytes": 2 << 20, "cpu_total_ns": 1_000_000, "pids": 1}

    async def list_by_label(self, label: str, value: str | None = None) -> list[ContainerState]:
        self._check("list_by_label")
        out = []
        for c in list(self.containers.values()):
            if label in c.spec.labels and (value is None or c.spec.labels[label] == value):
                out.append(await self.inspect(c.id))
        return out


__all__ = ["FakeContainer", "FakeEngine"]
