"""The container engine interface the supervisor talks to; Docker is one implementation.

Data carriers here are engine-neutral dataclasses: the supervisor builds a :class:`ContainerSpec`
from a policy with pure code, and only the engine implementation turns it into SDK arguments.
Every method documents what it raises, so callers can tell "the engine could not do it"
(:class:`~dad_sandbox.errors.EngineError`) from "the program in the container failed" (an exit code).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Literal, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Mount:
    """A host path (``kind="bind"``) or an engine volume by name (``kind="volume"``) in the container.

    Volumes are what copy mode uses when the engine cannot see the host's files
    (see ``sandbox/_remote_rundir.py``).
    """

    source: str
    target: str
    read_only: bool = True
    kind: Literal["bind", "volume"] = "bind"


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Everything needed to create one container, engine-neutral."""

    image: str
    command: tuple[str, ...]
    labels: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    working_dir: str | None = None
    mounts: tuple[Mount, ...] = ()
    tmpfs: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory: int | None = None
    pids_limit: int | None = None
    network: str = "none"
    read_only_root: bool = False
    cap_drop: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = True
    #: a seccomp profile's JSON text; None leaves the engine's default profile in place
    seccomp_profile: str | None = None
    init: bool = True
    runtime: str | None = None
    ulimits: dict[str, int] = field(default_factory=dict)
    #: keep stdin open until the first writer closes it (warm-pool containers receive their run there)
    stdin_open: bool = False
    #: "none" keeps the engine from storing a second, unbounded copy of the output on the host disk;
    #: the supervisor attaches before start, so nothing is lost.
    log_driver: str | None = "none"
    #: Swarm placement constraints ("node.labels.sandbox==true"); a single engine has one node and ignores them
    placement: tuple[str, ...] = ()


#: ``ContainerState.status`` of a run whose node left the cluster mid-run (Swarm): the engine cannot
#: say how it ended, so the run is ``crashed`` with reason ``node_lost``.
NODE_LOST = "node_lost"


@dataclass(frozen=True, slots=True)
class ContainerState:
    """What the engine says about a container; read BEFORE it is removed."""

    id: str
    status: str
    running: bool
    exit_code: int | None
    oom_killed: bool
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    image_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    pid: int | None = None  # the host pid of its first process while it runs (runc); None elsewhere


#: Called from the output pump with ("stdout" | "stderr", chunk). Runs in a worker thread.
OutputCallback = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class ExecSpec:
    """One process to start in a running container (``docker exec``), engine-neutral."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None  # None: the container's user
    #: bytes written to the process's stdin, which is then closed; None: no stdin at all
    stdin: bytes | None = None


@dataclass(frozen=True, slots=True)
class ExecExit:
    """How an exec'd process ended, as the engine reports it."""

    exit_code: int | None  # None when the engine could not tell (the container went away)
    pid: int | None = None  # the process's host pid (runc); None elsewhere


@dataclass(eq=False)
class StdinHandle:
    """A container's attached stdin, as :meth:`Engine.open_stdin` returns it.

    Opaque on purpose: callers only pass it back to the engine that opened it (to write once, or to
    close), so no SDK object or raw socket leaks above the engine. Each engine subclasses it to hold
    its own connection. ``closed`` turns true once it was written or closed; it is then spent.
    """

    container_id: str
    closed: bool = False


class Engine(abc.ABC):
    """Async access to a container engine. Implementations must be safe to call from one event loop."""

    name: str = "engine"
    #: whether the volume and archive methods below work (copy mode); an engine without them is
    #: used with bind mounts only
    supports_copy: bool = False

    @abc.abstractmethod
    async def info(self) -> dict[str, Any]:
        """Engine version and host facts.

        Raises:
            EngineUnavailable: no engine answers.
        """

    @abc.abstractmethod
    async def image_id(self, ref: str) -> str:
        """The id of a local image.

        Raises:
            ImageNotFound: the image is not on the engine (nothing is pulled).
        """

    @abc.abstractmethod
    async def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container; return its id. Not retried: creating is not idempotent.

        Raises:
            ImageNotFound, EngineError
        """

    @abc.abstractmethod
    async def start(self, container_id: str) -> None:
        """Start a created container.

        Raises:
            ContainerGone, EngineError
        """

    @abc.abstractmethod
    async def wait(self, container_id: str, timeout: float) -> int | None:
        """Wait for the container to exit; its exit code, or ``None`` if ``timeout`` passed first.

        Raises:
            ContainerGone, EngineError
        """

    @abc.abstractmethod
    async def inspect(self, container_id: str) -> ContainerState:
        """The container's state.

        Raises:
            ContainerGone, EngineError
        """

    @abc.abstractmethod
    async def kill(self, container_id: str) -> None:
        """SIGKILL the container; no error if it already stopped.

        Raises:
            ContainerGone, EngineError
        """

    @abc.abstractmethod
    async def remove(self, container_id: str) -> None:
        """Remove the container (forcefully); no error if it is already gone.

        Raises:
            EngineError
        """

    @abc.abstractmethod
    async def stream_output(
        self, container_id: str, on_output: OutputCallback, *, on_attached: Callable[[], None] | None = None
    ) -> None:
        """Feed the container's stdout/stderr to ``on_output`` until it exits.

        ``on_attached`` is called (from the pump thread) once the stream is connected, so the caller
        can start the container only then and lose nothing.

        Raises:
            ContainerGone, EngineError
        """

    @abc.abstractmethod
    async def open_stdin(self, container_id: str) -> StdinHandle:
        """Attach to the stdin of a container created with ``stdin_open``; returns a handle for
        :meth:`write_stdin` or :meth:`close_stdin`. Open it after :meth:`start`.

        Raises:
            ContainerGone: no such container.
            EngineError: the engine refused the attach.
        """

    @abc.abstractmethod
    async def write_stdin(self, handle: StdinHandle, data: bytes) -> None:
        """Write ``data`` to an attached stdin and close it (the process then reads EOF). Once only.

        Raises:
            ValueError: the handle was already written or closed, or another engine opened it.
            EngineError: the write failed (e.g. the container is gone).
        """

    @abc.abstractmethod
    async def close_stdin(self, handle: StdinHandle) -> None:
        """Close an attached stdin without writing (the process reads EOF); no error if already closed."""

    @abc.abstractmethod
    async def exec_stream(self, container_id: str, spec: ExecSpec, on_output: OutputCallback) -> ExecExit:
        """Run ``spec`` in the running container, feed its output to ``on_output``, return how it ended.

        Output is not buffered here: the caller bounds what it keeps. Returns when the process's
        output ends and the engine reports its exit code.

        Raises:
            ContainerGone: the container is not there (or not running).
            EngineError: the engine refused the exec (e.g. an unknown user).
        """

    @abc.abstractmethod
    async def stats(self, container_id: str) -> dict[str, Any] | None:
        """One resource sample (memory, cpu), or ``None`` when the container is not running."""

    @abc.abstractmethod
    async def list_by_label(self, label: str, value: str | None = None) -> list[ContainerState]:
        """Containers (running or not) that carry ``label`` (with ``value`` if given).

        Raises:
            EngineError
        """

    # ---------------------------------------------------------------- copy mode (engines that do not
    # see the host's files): volumes and archives. Optional: an engine without them runs bind mounts only.

    async def create_volume(self, name: str, labels: dict[str, str]) -> None:
        """Create a named volume on the engine (empty, local driver).

        Raises:
            EngineError
        """
        raise NotImplementedError(f"{type(self).__name__} cannot make volumes")

    async def remove_volume(self, name: str) -> None:
        """Remove a named volume; no error if it is already gone.

        Raises:
            EngineError: e.g. a container still uses it.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot remove volumes")

    async def list_volumes(self, label: str) -> list[dict[str, Any]]:
        """Volumes carrying ``label``: each ``{"name": …, "labels": {…}}``.

        Raises:
            EngineError
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list volumes")

    async def put_archive(self, container_id: str, path: str, archive: IO[bytes]) -> None:
        """Unpack a tar archive (read from ``archive``, streamed) into ``path`` of a created container.

        ``path`` must be in a writable volume or the container's writable root.

        Raises:
            ContainerGone, EngineError
        """
        raise NotImplementedError(f"{type(self).__name__} cannot copy files into a container")

    async def get_archive(
        self, container_id: str, path: str, consume: Callable[[Iterator[bytes]], T], *, budget: float | None = None
    ) -> T:
        """Hand ``consume`` the tar of ``path`` in the container as a stream of chunks; return its result.

        ``consume`` runs in a worker thread, so it may block; the stream is closed when it returns,
        whether or not it read to the end (a consumer that stops at a quota ends the transfer).
        ``budget``: seconds after which the stream is cut (the next read fails or ends), however
        slowly the engine sends; None: the engine's call timeout.

        Raises:
            ContainerGone: the container, or ``path`` in it, does not exist.
            EngineError
        """
        raise NotImplementedError(f"{type(self).__name__} cannot copy files out of a container")

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
