"""A warm pool: containers created and started ahead, each used for exactly one run, then removed.

Container start dominates a run (~0.1-0.3 s here), so a pool slot does it before anyone asks:
the container runs a tiny waiter that blocks on stdin, its output stream is already attached, and
its run dir is an empty prepared folder ``<run_root>/.pool/<slot>`` mounted at ``/dad/runs/<slot>``.
On dispatch the folder is renamed to ``<run_root>/<run_id>`` (a bind mount follows the directory,
not its name), the run request is written to the waiter's stdin, and the waiter ``exec``s the run's
command. Isolation is never traded for speed: a slot serves one run and its container is removed
like any other; a new slot is made in the background to replace it. Pool containers carry the same
labels as every run container (plus ``dad.pool``), so recovery and ``gc`` clean them up too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dad_sandbox._limits import POOL_MAX_IDLE_SECONDS as MAX_IDLE_SECONDS
from dad_sandbox._logging import get_logger
from dad_sandbox.errors import DadSandboxError
from dad_sandbox.run import _safe_fs
from dad_sandbox.run._layout import LOGS_FILE, METRICS_FILE, TRACE_DIR, make_run_dir_skeleton
from dad_sandbox.sandbox import _labels, _ownership
from dad_sandbox.sandbox._output import OutputSink, attach_output
from dad_sandbox.sandbox._policy import Policy
from dad_sandbox.sandbox._spec import container_spec
from dad_sandbox.sandbox.engine import Engine, StdinHandle

log = get_logger(__name__)

POOL_DIR = ".pool"
POOL_LABEL = "dad.pool"

#: The waiter: read one JSON request line from stdin, then become the run's command.
WAITER = (
    "import json, os, sys\n"
    "line = sys.stdin.buffer.readline()\n"
    "if not line: sys.exit(0)\n"
    "req = json.loads(line)\n"
    "fd = os.environ.pop('DAD_DEADLINE_FD', None)\n"
    "if fd is not None:\n"  # tell dad-init the run's deadline, then close the pipe before the run starts
    "    try:\n"
    "        if req.get('deadline'): os.write(int(fd), ('%.3f\\n' % float(req['deadline'])).encode())\n"
    "    finally:\n"
    "        os.close(int(fd))\n"
    "os.environ.update(req.get('env') or {})\n"
    "try:\n"
    "    os.execvpe(req['argv'][0], req['argv'], os.environ)\n"
    "except OSError as e:\n"
    "    print(f'dad-sandbox: cannot run {req[\"argv\"][0]!r}: {e}', file=sys.stderr)\n"
    "    sys.exit(127)\n"
)


def pointer_file(run_root: Path, slot_id: str) -> Path:
    """Where a dispatched slot records which run it became (for recovery after a crash)."""
    return run_root / POOL_DIR / f"{slot_id}.run"


@dataclass(slots=True)
class Slot:
    """One ready container with its prepared run dir, attached output and open stdin."""

    slot_id: str
    slot_dir: Path
    container_id: str
    user: _ownership.RunUser
    sink: OutputSink
    logs_fd: int
    metrics_fd: int
    pump: asyncio.Task[Any]
    stdin: StdinHandle
    created: float = field(default_factory=time.monotonic)

    def close_fds(self) -> None:
        for fd in (self.logs_fd, self.metrics_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class WarmPool:
    """Keeps ``size`` slots of one policy ready; :meth:`take` hands one out and starts a refill."""

    def __init__(self, policy: Policy, size: int, engine: Engine, *, project_root: Path, run_root: Path) -> None:
        if size < 1:
            raise ValueError(f"warm pool size for policy {policy.name!r} must be at least 1")
        self.policy = policy
        self.size = size
        self.engine = engine
        self.project_root = project_root
        self.run_root = run_root
        self._ready: list[Slot] = []
        self._filling = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._closed = False
        self.failures = 0

    def start(self) -> None:
        self._refill()

    def _refill(self) -> None:
        # One slot at a time: creating containers in parallel on 2 cores slows the runs being served.
        if self._closed or self._filling or len(self._ready) >= self.size:
            return
        self._filling += 1
        task = asyncio.create_task(self._fill_one())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fill_one(self) -> None:
        try:
            slot = await self._make_slot()
        except (DadSandboxError, OSError) as exc:
            self.failures += 1
            log.error("could not prepare a warm-pool container", policy=self.policy.name, error=str(exc))
            await asyncio.sleep(min(30.0, 0.5 * 2 ** min(self.failures, 6)))  # back off, then try again
        else:
            self.failures = 0
            if self._closed:
                await self._discard(slot)
            else:
                self._ready.append(slot)
        finally:
            self._filling -= 1
            self._changed.set()
            self._refill()

    async def _make_slot(self) -> Slot:
        slot_id = f"pool_{secrets.token_hex(6)}"
        slot_dir = self.run_root / POOL_DIR / slot_id
        slot_dir.mkdir(parents=True)
        make_run_dir_skeleton(slot_dir)
        user = _ownership.resolve_user(self.policy.user)
        _ownership.prepare(slot_dir, user)
        deadline = time.time() + MAX_IDLE_SECONDS + self.policy.timeout
        spec = container_spec(
            self.policy, user, ["python3", "-c", WAITER],
            project_root=self.project_root, run_root=self.run_root, run_dir=slot_dir, dir_name=slot_id, deadline=deadline,
            labels={_labels.RUN_ID: slot_id, POOL_LABEL: slot_id}, stdin_open=True,
        )
        cid = await self.engine.create(spec)
        with _safe_fs.opened_dir(slot_dir, TRACE_DIR) as fd:
            logs_fd = _safe_fs.open_append(fd, LOGS_FILE)
            metrics_fd = _safe_fs.open_append(fd, METRICS_FILE)
        sink = OutputSink(logs_fd, limit=self.policy.output_limit, run_id=slot_id, metrics_fd=metrics_fd)
        pumps: list[asyncio.Task[Any]] = []
        try:
            pump = await attach_output(self.engine, cid, sink, pump_holder=pumps.append)
            await self.engine.start(cid)
            stdin = await self.engine.open_stdin(cid)
        except BaseException:
            for task in pumps:
                task.cancel()
            with contextlib.suppress(DadSandboxError):
                await self.engine.remove(cid)
            for fd in (logs_fd, metrics_fd):
                os.close(fd)
            shutil.rmtree(slot_dir, ignore_errors=True)
            raise
        return Slot(slot_id, slot_dir, cid, user, sink, logs_fd, metrics_fd, pump, stdin)

    def take(self) -> Slot | None:
        """A ready slot (removed from the pool), or None if none is ready; a refill starts either way."""
        slot = self._ready.pop(0) if self._ready else None
        self._refill()
        return slot

    @property
    def ready(self) -> int:
        return len(self._ready)

    async def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until the pool is full (or the timeout passes)."""
        end = time.monotonic() + timeout
        while len(self._ready) < self.size and time.monotonic() < end:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=max(0.0, end - time.monotonic()))

    async def _discard(self, slot: Slot) -> None:
        slot.pump.cancel()
        await self.engine.close_stdin(slot.stdin)
        with contextlib.suppress(DadSandboxError):
            await self.engine.remove(slot.container_id)
        slot.close_fds()
        with contextlib.suppress(OSError):
            _ownership.reclaim(slot.slot_dir, slot.user)
        shutil.rmtree(slot.slot_dir, ignore_errors=True)

    async def close(self) -> None:
        """Remove every idle slot; stop refilling."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        slots, self._ready = self._ready, []
        await asyncio.gather(*(self._discard(s) for s in slots), return_exceptions=True)
