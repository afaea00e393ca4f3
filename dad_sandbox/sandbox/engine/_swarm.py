"""The Docker Swarm engine: each run is one Swarm service, placed by Swarm on one of its nodes.

Why these choices (measured on Engine 20.10 / API 1.41, docs/SCALING.md):

* **One service per run, replicated with 1 replica and restart condition none.** A
  ``replicated-job`` service is the natural fit, but removing a running one does not stop its
  container on 20.10 (moby 44312); a replicated service does, and reports the same exit code.
* **The "container id" the supervisor holds is the service name** (``dad-run-<hex>``), chosen at
  :meth:`create` and stable from then on. The service itself is made at :meth:`start`, so a run
  cancelled before it starts leaves nothing on the cluster.
* **Status comes from the task**: its state and ``ContainerStatus.ExitCode``. A task whose node left
  the cluster keeps saying ``running`` until the node returns, so one poller per engine also reads
  the nodes' state and reports such a run as ``node_lost`` within a few seconds (heartbeat 1 s).
* **Kill = scale to 0 replicas** with ``StopSignal`` SIGKILL: the task ends (exit 137) and stays
  in the task history with its exit code and logs until :meth:`remove` deletes the service.
* **Output is read from the service's logs once the task has ended** (a ``json-file`` log capped per
  task on the node): Swarm has no attach. So a run's output arrives when it ends, not live, and a
  run on a lost node has none.
* **What a service cannot carry on API 1.41 is refused, never dropped silently**: a seccomp profile
  other than the node's default, a runtime other than the nodes' default, a network, stdin.
  no-new-privileges is set daemon-wide on the nodes. OOM kills are not reported by Swarm: such a run
  ends ``crashed`` (``signal:SIGKILL``, exit 137) with a note saying so.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
from docker.utils import kwargs_from_env

from dad_sandbox._limits import SWARM_KILL_SETTLE_SECONDS as KILL_SETTLE_SECONDS
from dad_sandbox._limits import SWARM_POLL_INTERVAL as POLL_INTERVAL
from dad_sandbox._logging import get_logger
from dad_sandbox.errors import ContainerGone, EngineError, EngineUnavailable
from dad_sandbox.sandbox import _labels
from dad_sandbox.sandbox.engine._base import (
    NODE_LOST,
    ContainerSpec,
    ContainerState,
    Engine,
    ExecExit,
    ExecSpec,
    OutputCallback,
    StdinHandle,
)
from dad_sandbox.sandbox.engine._docker import (
    DEFAULT_CALL_TIMEOUT,
    _parse_time,
    _retry_transient,
    run_blocking,
    run_in_daemon_thread,
    run_output_pump,
)
from dad_sandbox.sandbox.engine._errors import map_docker_errors
from dad_sandbox.sandbox.engine._swarm_probe import failure_message, probe_run_root

log = get_logger(__name__)
T = TypeVar("T")

SERVICE_PREFIX = "dad-run-"
#: The node keeps at most this much of a task's output (json-file, one file): the sink keeps less.
LOG_MAX_SIZE = "32m"
#: Exit code :meth:`SwarmEngine.wait` returns for a run whose node was lost (there is no real one).
NODE_LOST_EXIT = -1

_NOT_YET_RUNNING = frozenset({"new", "pending", "assigned", "accepted", "ready", "preparing", "starting"})
_ENDED = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned", "remove"})
_NODE_GONE = frozenset({"down", "unknown", "disconnected"})
_TASK_NOT_MADE = "the task's container never ran"


class UnsupportedOnSwarm(EngineError):
    """A run asks for something a Swarm service cannot carry (refused rather than silently dropped)."""


class RunRootNotShared(EngineError):
    """A Swarm node does not see the run root at the same path: a run placed there would lose its files."""


# ---------------------------------------------------------------------------------------------- pure parts


def _tmpfs_mount(target: str, options: str) -> dict[str, Any]:
    """A ``tmpfs`` mount of the service from Docker's ``size=…,mode=…[,ro]`` option string."""
    size: int | None = None
    mode: int | None = None
    read_only = False
    for opt in options.split(","):
        key, _, value = opt.strip().partition("=")
        if key == "size":
            size = _size_bytes(value)
        elif key == "mode":
            mode = int(value, 8)
        elif key == "ro":
            read_only = True
        elif key not in ("", "rw"):
            raise UnsupportedOnSwarm(f"tmpfs option {opt!r} of {target} cannot be given to a Swarm service")
    mount: dict[str, Any] = {"Target": target, "Type": "tmpfs", "ReadOnly": read_only, "TmpfsOptions": {}}
    if size is not None:
        mount["TmpfsOptions"]["SizeBytes"] = size
    if mode is not None:
        mount["TmpfsOptions"]["Mode"] = mode
    return mount


def _size_bytes(value: str) -> int:
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = value.strip().lower()
    unit = text[-1] if text and text[-1] in "kmg" else ""
    return int(text[: len(text) - len(unit)]) * units[unit]


def service_spec(spec: ContainerSpec, *, node_runtime: str = "runc") -> dict[str, Any]:
    """``create_service`` arguments for one run: pure, so it is tested without a cluster.

    Raises:
        UnsupportedOnSwarm: the spec needs something a service cannot carry on API 1.41.
    """
    if spec.stdin_open:
        raise UnsupportedOnSwarm("a Swarm task cannot be given stdin: warm pools and sessions need the docker engine")
    if spec.network != "none":
        raise UnsupportedOnSwarm(
            f"network {spec.network!r} is not available on the Swarm engine: runs there have only 'lo' "
            "(use a policy with network = 'none')"
        )
    if spec.seccomp_profile is not None:
        raise UnsupportedOnSwarm(
            "a Swarm service cannot carry a seccomp profile on Engine 20.10 (API 1.41): use a policy with "
            "seccomp = 'docker-default' (the node's default profile; start the nodes' dockerd with "
            "--seccomp-profile to make the strict one their default)"
        )
    if (spec.runtime or "runc") != node_runtime:
        raise UnsupportedOnSwarm(
            f"runtime {spec.runtime!r} cannot be chosen per Swarm service: tasks run with the nodes' default "
            f"runtime ({node_runtime!r}); make it the nodes' default runtime and tell the engine "
            "(SwarmEngine(node_runtime=...), DAD_SANDBOX_SWARM_RUNTIME)"
        )
    mounts: list[dict[str, Any]] = [
        {"Target": m.target, "Source": m.source, "Type": "bind", "ReadOnly": m.read_only} for m in spec.mounts
    ]
    mounts += [_tmpfs_mount(target, options) for target, options in spec.tmpfs.items()]
    container: dict[str, Any] = {
        "Image": spec.image,
        "Args": list(spec.command),  # like Docker's Cmd: the image's entrypoint (none in ours) stays
        "Env": [f"{k}={v}" for k, v in spec.env.items()],
        "Labels": dict(spec.labels),
        "Mounts": mounts,
        "ReadOnly": spec.read_only_root,
        "Init": spec.init,
        # a kill is immediate, as on a single engine: the deadline has passed or the user cancelled
        "StopSignal": "SIGKILL",
        "StopGracePeriod": 0,
    }
    if spec.user:
        container["User"] = spec.user
    if spec.working_dir:
        container["Dir"] = spec.working_dir
    if spec.cap_drop:
        container["CapabilityDrop"] = list(spec.cap_drop)
    if spec.cap_add:
        container["CapabilityAdd"] = list(spec.cap_add)
    if spec.ulimits:
        container["Ulimits"] = [{"Name": k, "Soft": v, "Hard": v} for k, v in spec.ulimits.items()]
    limits: dict[str, Any] = {}
    if spec.cpus:
        limits["NanoCPUs"] = int(spec.cpus * 1e9)
    if spec.memory:
        limits["MemoryBytes"] = spec.memory
    if spec.pids_limit:
        limits["Pids"] = spec.pids_limit
    task_template: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": {"Limits": limits},
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "LogDriver": {"Name": "json-file", "Options": {"max-size": LOG_MAX_SIZE, "max-file": "1"}},
    }
    if spec.placement:
        task_template["Placement"] = {"Constraints": list(spec.placement)}
    return {
        "task_template": task_template,
        "labels": dict(spec.labels),
        "mode": {"Replicated": {"Replicas": 1}},
    }


def _latest_task(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(tasks, key=lambda t: t.get("CreatedAt") or "", default=None)


def task_state(
    name: str,
    labels: dict[str, str],
    task: dict[str, Any] | None,
    down_nodes: frozenset[str],
    *,
    stopped: bool = False,
    image_id: str | None = None,
) -> ContainerState:
    """What the supervisor needs from one run's task (pure).

    ``down_nodes``: ids of nodes that are not ready; ``stopped``: the service was scaled to 0 (killed).
    """
    if task is None:
        if stopped:  # scaled to 0 before Swarm made a task: it never ran
            return ContainerState(id=name, status="created", running=False, exit_code=0, oom_killed=False,
                                  error=f"{_TASK_NOT_MADE}: stopped before Swarm placed it", labels=labels)
        return ContainerState(id=name, status="pending", running=True, exit_code=None, oom_killed=False, labels=labels)
    status = task.get("Status") or {}
    state = str(status.get("State") or "unknown")
    if state in _NOT_YET_RUNNING and (stopped or task.get("DesiredState") in ("shutdown", "remove")):
        # stopped while waiting for a node (e.g. no node satisfies the placement): it never ran
        state = "shutdown"
    cstatus = status.get("ContainerStatus") or {}
    exit_code = cstatus.get("ExitCode")
    when = _parse_time(status.get("Timestamp"))
    node = task.get("NodeID") or ""
    common: dict[str, Any] = {"id": name, "oom_killed": False, "image_id": image_id, "labels": labels}
    if node and node in down_nodes and state not in _ENDED:
        return ContainerState(status=NODE_LOST, running=False, exit_code=None,
                              error=f"Swarm node {node[:12]} left the cluster while the run was {state}",
                              started_at=when, **common)
    if state == "orphaned":
        return ContainerState(status=NODE_LOST, running=False, exit_code=None,
                              error=f"Swarm gave up on node {node[:12]} (task orphaned)", started_at=when, **common)
    if state not in _ENDED:
        return ContainerState(status=state, running=True, exit_code=None, started_at=when if state == "running" else None,
                              **common)
    err = status.get("Err") or None
    if exit_code is None or not cstatus.get("ContainerID"):
        # rejected (missing image or bind source), or a container that failed to start: it never ran.
        # "created" with exit 0 and no start time is what the classifier reads as crashed/engine_error.
        return ContainerState(status="created", running=False, exit_code=0,
                              error=f"{_TASK_NOT_MADE}: task {state}: {err or status.get('Message') or '?'}", **common)
    code = int(exit_code)
    note = None
    if code == 137:
        note = ("exit 137 (SIGKILL) that the supervisor did not send; Swarm does not report OOM kills, so with a "
                "memory limit this is most likely the kernel's OOM killer")
    return ContainerState(status="exited", running=False, exit_code=code, error=note, started_at=when,
                          finished_at=when, **common)


def _replicas(service: dict[str, Any]) -> int | None:
    replicated = ((service.get("Spec") or {}).get("Mode") or {}).get("Replicated") or {}
    value = replicated.get("Replicas")
    return int(value) if value is not None else None


def down_node_ids(nodes: list[dict[str, Any]]) -> frozenset[str]:
    """Ids of the nodes that are not ``ready`` (lost, unknown, disconnected)."""
    return frozenset(n["ID"] for n in nodes if ((n.get("Status") or {}).get("State") or "unknown") in _NODE_GONE)


#: Largest piece of a log frame read at once: a frame header may announce up to 4 GiB.
_FRAME_PIECE = 64 << 10


def _frames(raw: Any) -> Iterator[tuple[int, bytes]]:
    """Pieces of a multiplexed log stream: an 8-byte header (stream, 0, 0, 0, size) then the payload.

    A payload is yielded in pieces of at most 64 KiB, so no frame size makes us hold more than that.
    """
    while True:
        header = raw.read(8)
        if len(header) < 8:
            return
        stream, left = header[0], struct.unpack(">I", header[4:8])[0]
        while left:
            piece = raw.read(min(left, _FRAME_PIECE))
            if not piece:
                return
            left -= len(piece)
            yield stream, piece


# ---------------------------------------------------------------------------------------------- the poller


@dataclass(slots=True)
class _Snapshot:
    """The last poll: tasks by service id, nodes that are gone, and when (monotonic)."""

    tasks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    down: frozenset[str] = frozenset()
    at: float = 0.0
    error: BaseException | None = None


class _Poller:
    """One thread per engine reads the watched services' tasks and the nodes every POLL_INTERVAL.

    Why one poller: 50 runs each asking the manager 4 times a second would cost it more than the
    runs; one round of two calls serves them all. It runs only while someone watches.
    """

    def __init__(self, read: Callable[[list[str]], _Snapshot]) -> None:
        self._read = read
        self._cond = threading.Condition()
        self._watched: dict[str, int] = {}
        self._thread: threading.Thread | None = None
        self.snapshot = _Snapshot()

    @contextlib.contextmanager
    def watching(self, service_id: str) -> Iterator[None]:
        with self._cond:
            self._watched[service_id] = self._watched.get(service_id, 0) + 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="dad-swarm-poller", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._cond:
                self._watched[service_id] -= 1
                if not self._watched[service_id]:
                    del self._watched[service_id]

    def wait_newer(self, than: float, timeout: float) -> _Snapshot:
        """The first snapshot taken after ``than`` (or the current one when ``timeout`` passes)."""
        with self._cond:
            self._cond.wait_for(lambda: self.snapshot.at > than, timeout=max(timeout, 0.0))
            return self.snapshot

    def _loop(self) -> None:
        while True:
            with self._cond:
                ids = sorted(self._watched)
                if not ids:
                    self._thread = None
                    return
            try:
                snap = self._read(ids)
            except Exception as exc:  # kept for the waiters, who raise it; the next round tries again
                snap = _Snapshot(tasks=self.snapshot.tasks, down=self.snapshot.down, at=time.monotonic(), error=exc)
            with self._cond:
                self.snapshot = snap
                self._cond.notify_all()
            time.sleep(POLL_INTERVAL)


# ---------------------------------------------------------------------------------------------- the engine


class SwarmEngine(Engine):
    """:class:`Engine` backed by a Docker Swarm manager (``base_url`` or ``DOCKER_HOST``).

    Args:
        base_url: the manager's API (``unix:///…/docker.sock``, ``tcp://…``); ``DOCKER_HOST`` if None.
        node_runtime: the OCI runtime the nodes' dockerd uses by default; a policy must name it.
        call_timeout: seconds per API call.
    """

    name = "swarm"

    def __init__(self, *, base_url: str | None = None, node_runtime: str = "runc",
                 call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self._base_url = base_url
        self._node_runtime = node_runtime
        self._call_timeout = call_timeout
        self._api: docker.APIClient | None = None
        self._lock = threading.Lock()
        self._info: dict[str, Any] | None = None
        self._pending: dict[str, dict[str, Any]] = {}  # name -> create_service kwargs, until start()
        self._ids: dict[str, str] = {}  # name -> service id
        self._stopped: set[str] = set()  # names of services this engine scaled to 0
        self._made: dict[str, threading.Event] = {}  # name -> set once start() made (or gave up) its service
        self._poller = _Poller(self._read_snapshot)
        # (run root, placement) -> None when every node sees it, else the message
        self._root_verdicts: dict[tuple[str, tuple[str, ...]], str | None] = {}
        self._root_locks: dict[tuple[str, tuple[str, ...]], threading.Lock] = {}

    # ---- plumbing

    @property
    def api(self) -> docker.APIClient:
        with self._lock:
            if self._api is None:
                kwargs = kwargs_from_env()
                if self._base_url:
                    kwargs["base_url"] = self._base_url
                with map_docker_errors("connecting to the Swarm manager"):
                    self._api = docker.APIClient(version="auto", timeout=self._call_timeout, **kwargs)  # type: ignore[arg-type]
            return self._api

    async def _call(self, what: str, fn: Callable[[], T], *, retry_transient: bool = True) -> T:
        def run() -> T:
            with map_docker_errors(what):
                return fn()

        return await run_blocking(_retry_transient(run) if retry_transient else run)

    def _read_snapshot(self, service_ids: list[str]) -> _Snapshot:
        def read() -> _Snapshot:
            with map_docker_errors("polling the Swarm tasks and nodes"):
                # every task, not a filter by service: one removed service would fail a filtered
                # call for all runs; a removed service is found by its waiter (no task, no service)
                tasks = self.api.tasks()
                nodes = self.api.nodes()
            by_service: dict[str, list[dict[str, Any]]] = {sid: [] for sid in service_ids}
            for task in tasks:
                if task.get("ServiceID") in by_service:
                    by_service[task["ServiceID"]].append(task)
            return _Snapshot(tasks=by_service, down=down_node_ids(nodes), at=time.monotonic())

        return _retry_transient(read)()

    def _service_id(self, name: str) -> str:
        """The service id of a run (blocking); ContainerGone when there is no such service."""
        sid = self._ids.get(name)
        if sid is None:
            with map_docker_errors(f"looking up the run's service {name}"):
                sid = str(self.api.inspect_service(name)["ID"])
            self._ids[name] = sid
        return sid

    def _state_now(self, name: str) -> ContainerState:
        """A fresh read of one run's state (blocking)."""
        if name in self._pending:
            return ContainerState(id=name, status="created", running=False, exit_code=0, oom_killed=False,
                                  labels=dict(self._pending[name]["labels"]))
        with map_docker_errors(f"inspecting the run's service {name}"):
            service = self.api.inspect_service(name)
            sid = str(service["ID"])
            self._ids[name] = sid
            tasks = self.api.tasks(filters={"service": sid})
            nodes = self.api.nodes()
        labels = dict((service.get("Spec") or {}).get("Labels") or {})
        return task_state(name, labels, _latest_task(tasks), down_node_ids(nodes), stopped=_replicas(service) == 0)

    def _forget_pending(self, name: str) -> bool:
        """End a run's "not started yet" state (started, failed or dropped); True if it was pending."""
        was_pending = self._pending.pop(name, None) is not None
        made = self._made.get(name)
        if made is not None:
            made.set()
        return was_pending

    # ---- the interface

    async def info(self) -> dict[str, Any]:
        if self._info is None:
            def ask() -> dict[str, Any]:
                info = self.api.info()
                version = self.api.version()
                swarm = info.get("Swarm") or {}
                if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
                    raise EngineUnavailable(
                        f"the engine at {self._base_url or os.environ.get('DOCKER_HOST') or 'the default socket'} is "
                        "not a Swarm manager: point DOCKER_HOST (or SwarmEngine(base_url=...)) at a manager node "
                        "('docker swarm init'; 'make cluster' stands up a local one)"
                    )
                return {
                    "engine": "swarm",
                    "version": version.get("Version"),
                    "api_version": version.get("ApiVersion"),
                    "kernel": version.get("KernelVersion"),
                    "nodes": swarm.get("Nodes"),
                    "managers": swarm.get("Managers"),
                }

            self._info = await self._call("asking the Swarm manager for its state", ask)
        return self._info

    async def image_id(self, ref: str) -> str:
        """The image as the manager has it (nodes must hold the same image: nothing is pulled)."""
        data = await self._call(f"looking up image {ref!r} on the manager", lambda: self.api.inspect_image(ref))
        return str(data["Id"])

    async def create(self, spec: ContainerSpec) -> str:
        """Check the spec and name the run's service; the service itself is made by :meth:`start`."""
        kwargs = service_spec(spec, node_runtime=self._node_runtime)
        run_dir = spec.labels.get(_labels.RUN_DIR)
        if run_dir:
            await self.check_run_root(Path(run_dir).parent, spec.image, spec.placement)
        name = SERVICE_PREFIX + secrets.token_hex(8)
        self._pending[name] = kwargs
        self._made[name] = threading.Event()
        return name

    async def check_run_root(self, run_root: Path, image: str, placement: Sequence[str] = ()) -> None:
        """Before the first run on ``run_root``: every eligible node must see it at the same path.

        The verdict is kept per run root and placement for the life of the engine, so the probe
        service costs one round per run root, not one per run.

        Raises:
            RunRootNotShared: a node rejects the bind mount or sees other content there.
        """
        key = (str(run_root), tuple(placement))
        with self._lock:
            lock = self._root_locks.setdefault(key, threading.Lock())

        def check() -> str | None:
            with lock:
                if key not in self._root_verdicts:
                    with map_docker_errors(f"probing the run root {run_root} on every Swarm node"):
                        views = probe_run_root(self.api, run_root, image, placement=placement)
                    self._root_verdicts[key] = failure_message(run_root, views)
                return self._root_verdicts[key]

        problem = await run_blocking(check)
        if problem is not None:
            raise RunRootNotShared(problem)

    async def start(self, container_id: str) -> None:
        kwargs = self._pending.get(container_id)
        if kwargs is None:
            raise ContainerGone(f"run service {container_id} was removed before it started")

        def create() -> None:
            # no image resolution: Swarm would ask a registry for the digest (none here, none needed)
            result = self.api.create_service(name=container_id, **kwargs)
            self._ids[container_id] = str(result["ID"])

        try:
            await self._call(f"creating the run's Swarm service from {kwargs['task_template']['ContainerSpec']['Image']!r}",
                             create, retry_transient=False)
        finally:
            self._forget_pending(container_id)

    async def wait(self, container_id: str, timeout: float) -> int | None:
        """The task's exit code once it ended, ``NODE_LOST_EXIT`` if its node left, None on timeout."""
        if container_id in self._pending:
            raise ContainerGone(f"run service {container_id} was never started")

        def wait() -> int | None:
            state = self._wait_end(container_id, time.monotonic() + max(timeout, 0.0))
            if state is None:
                return None
            if state.status == NODE_LOST:
                return NODE_LOST_EXIT
            return state.exit_code if state.exit_code is not None else NODE_LOST_EXIT

        return await run_blocking(wait)

    def _wait_end(self, name: str, end: float) -> ContainerState | None:
        """Block until the run's task ended (or its node left); None when ``end`` passes first.

        A run not started yet is waited for first (the output pump attaches before the start).
        """
        made = self._made.get(name)
        if made is not None:
            made.wait(timeout=min(max(end - time.monotonic(), 0.0), 86400.0))
            if name in self._pending:
                return None if time.monotonic() >= end else ContainerState(
                    id=name, status="created", running=False, exit_code=0, oom_killed=False)
            if name not in self._ids:  # dropped before it started, or its creation failed
                return ContainerState(id=name, status="created", running=False, exit_code=0, oom_killed=False,
                                      error=f"{_TASK_NOT_MADE}: its service was not created")
        with map_docker_errors(f"waiting for the run's service {name}"):
            sid = self._service_id(name)
        seen = 0.0
        misses = 0
        with self._poller.watching(sid):
            while True:
                snap = self._poller.wait_newer(seen, min(end - time.monotonic(), 2.0))
                seen = snap.at
                if snap.error is not None:
                    # a fresh exception per waiter (the poller's is shared between threads)
                    kind = type(snap.error) if isinstance(snap.error, EngineError) else EngineUnavailable
                    raise kind(f"waiting for the run's service {name}: {snap.error}") from snap.error
                tasks = snap.tasks.get(sid)
                if tasks is not None:
                    if not tasks:
                        misses += 1
                        if misses % 8 == 0:  # no task for 2 s: is the service still there?
                            with map_docker_errors(f"looking up the run's service {name}"):
                                self.api.inspect_service(sid)
                    state = task_state(name, {}, _latest_task(tasks), snap.down, stopped=name in self._stopped)
                    if not state.running:
                        return state
                if time.monotonic() >= end:
                    return None

    async def inspect(self, container_id: str) -> ContainerState:
        return await self._call("inspecting the run's task", lambda: self._state_now(container_id))

    async def kill(self, container_id: str) -> None:
        """Scale the run's service to 0 (its task is SIGKILLed and kept with its exit code and logs)."""
        if self._forget_pending(container_id):
            return

        def kill() -> None:
            with map_docker_errors(f"stopping the run's service {container_id}"):
                service = self.api.inspect_service(container_id)
                self._stopped.add(container_id)
                if _replicas(service) != 0:
                    self.api.update_service(
                        service["ID"], service["Version"]["Index"], mode={"Replicated": {"Replicas": 0}},
                        fetch_current_spec=True,
                    )
            self._wait_end(container_id, time.monotonic() + KILL_SETTLE_SECONDS)

        await run_blocking(kill)

    async def remove(self, container_id: str) -> None:
        if self._forget_pending(container_id):
            return

        def remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self.api.remove_service(container_id)
            self._ids.pop(container_id, None)
            self._stopped.discard(container_id)
            self._made.pop(container_id, None)

        await self._call(f"removing the run's service {container_id}", remove)

    async def stream_output(
        self, container_id: str, on_output: OutputCallback, *, on_attached: Callable[[], None] | None = None
    ) -> None:
        """Feed the task's output to ``on_output`` once the task has ended (Swarm has no attach).

        The node keeps the output in a capped json-file log from the task's start, so nothing is lost
        by reading late; a run whose node left the cluster has no output to read.
        """
        if on_attached is not None:
            on_attached()
        state = await run_in_daemon_thread(lambda: self._wait_end(container_id, time.monotonic() + 86400.0 * 365),
                                           name=f"dad-swarm-wait-{container_id}")
        if state is None or state.status == NODE_LOST:
            return
        responses: list[Any] = []

        def pump() -> None:
            api = self.api
            with map_docker_errors("reading the run's output from the Swarm"):
                url = f"{api.base_url}/v{api.api_version}/services/{self._service_id(container_id)}/logs"
                response = api.get(url, params={"stdout": 1, "stderr": 1, "follow": 0}, stream=True)
                responses.append(response)
                try:
                    response.raise_for_status()
                    for stream, data in _frames(response.raw):
                        on_output("stderr" if stream == 2 else "stdout", data)
                finally:
                    response.close()

        await run_output_pump(pump, responses, name=f"dad-swarm-logs-{container_id}")

    async def stats(self, container_id: str) -> dict[str, Any] | None:
        """None: the manager does not relay a task's resource use (no peak memory on Swarm)."""
        return None

    async def list_by_label(self, label: str, value: str | None = None) -> list[ContainerState]:
        selector = f"{label}={value}" if value is not None else label

        def listing() -> list[ContainerState]:
            services = self.api.services(filters={"label": selector})
            if not services:
                return []
            ids = [s["ID"] for s in services]
            tasks = self.api.tasks(filters={"service": ids})
            down = down_node_ids(self.api.nodes())
            states = []
            for service in services:
                name = service["Spec"]["Name"]
                self._ids[name] = service["ID"]
                mine = [t for t in tasks if t.get("ServiceID") == service["ID"]]
                states.append(task_state(name, dict(service["Spec"].get("Labels") or {}), _latest_task(mine), down))
            return states

        return await self._call(f"listing run services labelled {selector}", listing)

    async def list_volumes(self, label: str) -> list[dict[str, Any]]:
        """None: runs on Swarm make no volumes (said, so `gc` still sweeps a dead supervisor's probes)."""
        return []

    # A service's task has no attach or exec through the manager's API: warm pools (stdin) and
    # sessions (exec) are refused on Swarm, as the README's engine section says.
    async def open_stdin(self, container_id: str) -> StdinHandle:
        raise UnsupportedOnSwarm("warm pools need a container's stdin, which a Swarm service does not offer: "
                                 "use a cold run (no warm pool) on Swarm")

    async def write_stdin(self, handle: StdinHandle, data: bytes) -> None:
        raise UnsupportedOnSwarm("a Swarm service has no stdin to write to")

    async def close_stdin(self, handle: StdinHandle) -> None:
        raise UnsupportedOnSwarm("a Swarm service has no stdin to close")

    async def exec_stream(self, container_id: str, spec: ExecSpec, on_output: OutputCallback) -> ExecExit:
        raise UnsupportedOnSwarm("sessions run commands with exec, which a Swarm service does not offer: "
                                 "use a Docker engine for sessions")

    async def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None


@functools.cache
def default_swarm_engine() -> SwarmEngine:
    """One engine per process for ``DAD_SANDBOX_ENGINE=swarm`` (manager from ``DOCKER_HOST``)."""
    return SwarmEngine(node_runtime=os.environ.get("DAD_SANDBOX_SWARM_RUNTIME", "runc"))


__all__ = ["NODE_LOST_EXIT", "RunRootNotShared", "SwarmEngine", "UnsupportedOnSwarm", "default_swarm_engine", "service_spec", "task_state"]
