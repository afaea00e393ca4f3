"""The Docker engine, through the docker SDK's low-level ``APIClient``.

The SDK blocks, so each call runs in a worker thread of a dedicated pool, under a copy of the
caller's contextvars (so log records keep their run id). Every request has a timeout; idempotent calls are retried by
tenacity on transient failures only (connection trouble, read timeouts, 5xx), with a cap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, TypeVar

import docker
import docker.errors
import docker.utils.socket
import requests.exceptions
from docker.utils import kwargs_from_env
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from dad_sandbox._limits import ENGINE_CALL_TIMEOUT as DEFAULT_CALL_TIMEOUT
from dad_sandbox._logging import get_logger
from dad_sandbox.errors import ContainerGone, DadSandboxError, EngineError
from dad_sandbox.sandbox.engine._base import (
    ContainerSpec,
    ContainerState,
    Engine,
    ExecExit,
    ExecSpec,
    OutputCallback,
    StdinHandle,
)
from dad_sandbox.sandbox.engine._errors import is_transient, map_docker_errors
from dad_sandbox.sandbox.engine._quirks import (
    EngineQuirks,
    is_seccomp_path_refusal,
    needs_runtime_check,
    runtime_honoured,
    seccomp_profile_file,
    ulimits_added,
)

log = get_logger(__name__)
T = TypeVar("T")


# Waits and output pumps block for a whole run, so they get their own large pool rather than the
# loop's default executor (a handful of threads on 2 cores would starve with a few runs at once).
_EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=512, thread_name_prefix="dad-engine")


async def run_blocking(fn: Callable[[], T]) -> T:
    """Run ``fn`` in the engine pool with the caller's contextvars (so logs keep their run id)."""
    ctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, ctx.run, fn)


async def run_in_daemon_thread(fn: Callable[[], T], *, name: str) -> T:
    """Run ``fn`` in a daemon thread of its own (with the caller's contextvars) and await its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    ctx = contextvars.copy_context()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def runner() -> None:
        try:
            result = ctx.run(fn)
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(settle, None, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=runner, name=name, daemon=True).start()
    return await future


async def run_output_pump(pump: Callable[[], None], opened: list[Any], *, name: str) -> None:
    """Run a blocking output pump in a daemon thread; if the caller is cancelled, close the streams
    the pump ``opened`` so its thread ends too (a stream the engine never ends must not outlive it)."""
    try:
        await run_in_daemon_thread(pump, name=name)
    except asyncio.CancelledError:
        for stream in opened:
            with contextlib.suppress(Exception):
                stream.close()
        raise


_retry_transient = retry(
    retry=retry_if_exception(is_transient),
    stop=stop_after_attempt(4),
    wait=wait_exponential(multiplier=0.1, max=2.0),
    reraise=True,
)


def _parse_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    # Docker gives nanoseconds; Python parses at most microseconds.
    head, _, frac = value.rstrip("Z").partition(".")
    frac = (frac[:6] if frac else "0").ljust(6, "0")
    try:
        return datetime.fromisoformat(f"{head}.{frac}+00:00")
    except ValueError:
        return None


def _state_from_inspect(data: dict[str, Any]) -> ContainerState:
    state = data.get("State") or {}
    return ContainerState(
        id=data["Id"],
        status=state.get("Status", "unknown"),
        running=bool(state.get("Running")),
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        error=state.get("Error") or None,
        started_at=_parse_time(state.get("StartedAt")),
        pid=state.get("Pid") or None,
        finished_at=_parse_time(state.get("FinishedAt")),
        image_id=data.get("Image"),
        labels=dict((data.get("Config") or {}).get("Labels") or {}),
    )


def _security_opt(spec: ContainerSpec, *, by_path: bool = False) -> list[str] | None:
    """``HostConfig.SecurityOpt``: Docker's API takes a seccomp profile's content, as the CLI sends
    it; an engine that reads it as a path (``EngineQuirks.seccomp_by_path``) gets a private file."""
    opts = ["no-new-privileges"] if spec.no_new_privileges else []
    if spec.seccomp_profile is not None:
        profile = spec.seccomp_profile
        if by_path and profile not in ("unconfined", "default", "docker-default"):
            profile = seccomp_profile_file(profile)
        opts.append(f"seccomp={profile}")
    return opts or None


@dataclass(eq=False)
class _DockerStdin(StdinHandle):
    """The attach socket behind a :class:`StdinHandle` (the SDK's wrapper unwrapped to the raw socket)."""

    sock: socket.socket | None = None


def _own_stdin(handle: StdinHandle) -> socket.socket:
    """The socket of a handle this engine opened and nobody has written or closed yet."""
    if not isinstance(handle, _DockerStdin) or handle.sock is None:
        raise ValueError(f"{handle!r} was not opened by the Docker engine")
    if handle.closed:
        raise ValueError(f"the stdin of container {handle.container_id} was already written or closed")
    return handle.sock


class DockerEngine(Engine):
    """:class:`Engine` backed by a Docker daemon (``DOCKER_HOST`` or the default socket)."""

    name = "docker"
    supports_copy = True

    def __init__(self, *, call_timeout: float = DEFAULT_CALL_TIMEOUT, base_url: str | None = None) -> None:
        self._call_timeout = call_timeout
        self._base_url = base_url
        self._api: docker.APIClient | None = None
        self._info: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._quirks = EngineQuirks()
        self._learning = threading.Lock()

    def _client(self, timeout: float | None = None, version: str = "auto") -> docker.APIClient:
        kwargs = kwargs_from_env()
        if self._base_url:
            kwargs["base_url"] = self._base_url
        with map_docker_errors("connecting to the Docker engine"):
            # the SDK's stubs say int, requests takes any number of seconds
            return docker.APIClient(version=version, timeout=timeout or self._call_timeout, **kwargs)  # type: ignore[arg-type]

    @property
    def api(self) -> docker.APIClient:
        with self._lock:
            if self._api is None:
                self._api = self._client()
            return self._api

    async def _call(self, what: str, fn: Callable[[], T], *, retry_transient: bool = True) -> T:
        def run() -> T:
            with map_docker_errors(what):
                return fn()

        runner = _retry_transient(run) if retry_transient else run
        return await run_blocking(runner)

    async def info(self) -> dict[str, Any]:
        """Engine facts, asked once per engine object (the version does not change under us)."""
        if self._info is None:
            self._info = await self._ask_info()
        return self._info

    async def _ask_info(self) -> dict[str, Any]:
        version = await self._call("asking the engine for its version", lambda: self.api.version())
        return {
            "engine": "docker",
            "version": version.get("Version"),
            "api_version": version.get("ApiVersion"),
            "os": version.get("Os"),
            "arch": version.get("Arch"),
            "kernel": version.get("KernelVersion"),
        }

    async def image_id(self, ref: str) -> str:
        data = await self._call(f"looking up image {ref!r}", lambda: self.api.inspect_image(ref))
        return str(data["Id"])

    async def create(self, spec: ContainerSpec) -> str:
        def create() -> str:
            if not self._must_check(spec):
                return self._create_learning_seccomp(spec)
            # Until the engine's quirks are known, creates that could show one go one at a time:
            # a container made while another thread is still learning would carry the old settings.
            with self._learning:
                if not self._must_check(spec):
                    return self._create_learning_seccomp(spec)
                return self._create_checked(spec)

        return await self._call(f"creating a container from {spec.image!r}", create, retry_transient=False)

    def _must_check(self, spec: ContainerSpec) -> bool:
        runtime = needs_runtime_check(spec.runtime)
        if runtime and self._quirks.runtime_honoured is False:
            raise EngineError(_runtime_ignored(spec.runtime))
        return (runtime and self._quirks.runtime_honoured is None) or self._quirks.must_read_back(
            asked_no_network=spec.network == "none", asked_tmpfs=bool(spec.tmpfs), asked_ulimits=bool(spec.ulimits))

    def _create_learning_seccomp(self, spec: ContainerSpec) -> str:
        try:
            return self._create(spec)
        except docker.errors.APIError as exc:
            if not (spec.seccomp_profile and not self._quirks.seccomp_by_path and is_seccomp_path_refusal(str(exc))):
                raise
            log.info("engine reads seccomp profiles from files; sending a path from now on")
            self._quirks.seccomp_by_path = True
            return self._create(spec)

    def _create_checked(self, spec: ContainerSpec) -> str:
        """Create, then read the container back before it can ever start, and learn from it.

        An engine that ignored the runtime would run a gVisor policy on runc (refused); one that
        ignored NetworkDisabled gave the container a network; one that copies up tmpfs mounts fills
        our empty masks with what they hide; one that replaced its default rlimits cannot start it.
        In the last three cases the container is remade with what the engine needs, never started.
        """
        container_id = self._create_learning_seccomp(spec)
        try:
            data = self.api.inspect_container(container_id)
            if needs_runtime_check(spec.runtime) and self._quirks.runtime_honoured is None:
                self._quirks.runtime_honoured = runtime_honoured(data, str(spec.runtime))
                if not self._quirks.runtime_honoured:
                    raise EngineError(_runtime_ignored(spec.runtime))
            asked = {"asked_no_network": spec.network == "none", "asked_tmpfs": bool(spec.tmpfs)}
            remake = self._quirks.learn(data, **asked)
            if spec.ulimits and self._quirks.ulimit_defaults is None:
                added = ulimits_added(data, spec.ulimits)
                remake |= self._quirks.learn_ulimit_defaults(self._bare_rlimits(spec) if added else None)
        except BaseException:
            self.api.remove_container(container_id, force=True, v=True)
            raise
        if not remake:
            return container_id
        log.info("engine quirks learned; remaking the container", quirks=str(self._quirks))
        self.api.remove_container(container_id, force=True, v=True)
        return self._create_learning_seccomp(spec)

    def _bare_rlimits(self, spec: ContainerSpec) -> dict[str, Any]:
        """Inspect data of a container created (never started) with no ulimits: the engine's defaults."""
        bare = self.api.create_container(
            image=spec.image, command=["true"], labels={"dad.probe": "rlimits"}, network_disabled=True,
            host_config=self.api.create_host_config(network_mode="none"),
        )
        try:
            return dict(self.api.inspect_container(bare["Id"]))
        finally:
            self.api.remove_container(bare["Id"], force=True, v=True)

    def _create(self, spec: ContainerSpec) -> str:
        api = self.api
        network_mode = None if spec.network == "none" else spec.network
        if spec.network == "none" and self._quirks.network_disabled_ignored:
            network_mode = "none"
        host_config = api.create_host_config(
            mounts=[
                docker.types.Mount(target=m.target, source=m.source, type=m.kind, read_only=m.read_only,
                                   no_copy=m.kind == "volume")  # a volume starts empty, whatever the image has there
                for m in spec.mounts
            ],
            tmpfs={path: self._quirks.tmpfs_options(opts) for path, opts in spec.tmpfs.items()} or None,
            nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
            mem_limit=spec.memory,
            memswap_limit=spec.memory,
            pids_limit=spec.pids_limit,
            network_mode=network_mode,
            read_only=spec.read_only_root,
            cap_drop=list(spec.cap_drop) or None,
            cap_add=list(spec.cap_add) or None,
            security_opt=_security_opt(spec, by_path=self._quirks.seccomp_by_path),
            init=spec.init,
            runtime=spec.runtime,
            ulimits=[docker.types.Ulimit(name=k, soft=soft, hard=hard)
                     for k, (soft, hard) in self._quirks.ulimits(spec.ulimits).items()] or None,
            log_config=docker.types.LogConfig(type=spec.log_driver) if spec.log_driver else None,
        )
        result = api.create_container(
            image=spec.image,
            command=list(spec.command),
            user=spec.user or "",
            environment=spec.env,
            labels=spec.labels,
            working_dir=spec.working_dir,
            host_config=host_config,
            # network_disabled leaves only `lo`, like mode "none", and starts ~145 ms faster.
            network_disabled=spec.network == "none",
            stdin_open=spec.stdin_open,
            tty=False,
        )
        return str(result["Id"])

    async def start(self, container_id: str) -> None:
        await self._call("starting the container", lambda: self.api.start(container_id), retry_transient=False)

    async def wait(self, container_id: str, timeout: float) -> int | None:
        def wait() -> int | None:
            try:
                result = self.api.wait(container_id, timeout=max(timeout, 0.001))  # type: ignore[arg-type]
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
                # The SDK reports an elapsed wait as a read timeout; tell it apart from a dead engine.
                state = _state_from_inspect(self.api.inspect_container(container_id))
                if state.running:
                    return None
                if state.exit_code is None:
                    raise EngineError(f"waiting for container {container_id[:12]} failed: {exc}") from exc
                return state.exit_code
            return int(result.get("StatusCode", -1))

        return await self._call("waiting for the container", wait, retry_transient=False)

    async def inspect(self, container_id: str) -> ContainerState:
        data = await self._call("inspecting the container", lambda: self.api.inspect_container(container_id))
        return _state_from_inspect(data)

    async def kill(self, container_id: str) -> None:
        def kill() -> None:
            try:
                self.api.kill(container_id)
            except docker.errors.NotFound:
                raise
            except docker.errors.APIError as exc:
                if exc.status_code == 409 or "is not running" in str(exc):
                    return
                raise

        await self._call("killing the container", kill)

    async def remove(self, container_id: str) -> None:
        def remove() -> None:
            try:
                self.api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409 and "already in progress" in str(exc):
                    return
                raise

        await self._call("removing the container", remove)

    async def stream_output(
        self, container_id: str, on_output: OutputCallback, *, on_attached: Callable[[], None] | None = None
    ) -> None:
        """Pump the container's output into ``on_output`` until the stream ends.

        The pump blocks for the whole run, so it gets a daemon thread of its own rather than a pool
        thread: a stream the engine never ends (seen after engine restarts and for containers that
        never started) must not keep the interpreter from exiting. Cancelling this coroutine closes
        the stream, which ends the thread's blocking read.
        """
        streams: list[Any] = []

        def pump() -> None:
            # A client without a read timeout (a quiet container must not end its own output
            # stream), with the version already negotiated so that making it costs no request.
            client = self._client(timeout=None, version=self.api.api_version)
            try:
                with map_docker_errors("streaming the container's output"):
                    frames = client.attach(container_id, stdout=True, stderr=True, stream=True, logs=False, demux=True)
                    streams.append(frames)
                    if on_attached is not None:
                        on_attached()
                    for out, err in frames:
                        if out:
                            on_output("stdout", out)
                        if err:
                            on_output("stderr", err)
            finally:
                client.close()

        await run_output_pump(pump, streams, name=f"dad-output-{container_id[:12]}")

    async def open_stdin(self, container_id: str) -> StdinHandle:
        def attach() -> _DockerStdin:
            sock = self.api.attach_socket(container_id, params={"stdin": 1, "stream": 1})
            return _DockerStdin(container_id, sock=getattr(sock, "_sock", sock))

        return await self._call("attaching to the container's stdin", attach, retry_transient=False)

    async def write_stdin(self, handle: StdinHandle, data: bytes) -> None:
        sock = _own_stdin(handle)
        handle.closed = True

        def write() -> None:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            finally:
                sock.close()

        try:
            await run_blocking(write)
        except OSError as exc:
            raise EngineError(f"writing to the container's stdin failed: {exc}") from exc

    async def close_stdin(self, handle: StdinHandle) -> None:
        if isinstance(handle, _DockerStdin) and handle.sock is not None and not handle.closed:
            handle.closed = True
            with contextlib.suppress(OSError):  # EOF for the reader: half-close first, as write_stdin does
                handle.sock.shutdown(socket.SHUT_WR)
            handle.sock.close()

    async def exec_stream(self, container_id: str, spec: ExecSpec, on_output: OutputCallback) -> ExecExit:
        sockets: list[Any] = []  # the SDK hands back a socket, or a wrapper around one

        def run() -> ExecExit:
            # Like the output pump: no read timeout (a quiet process must not end its own stream).
            client = self._client(timeout=None, version=self.api.api_version)
            try:
                with map_docker_errors(f"running {spec.argv[0]!r} in the container"):
                    created = client.exec_create(
                        container_id, list(spec.argv), stdout=True, stderr=True, stdin=spec.stdin is not None,
                        tty=False, user=spec.user or "", environment=spec.env or None, workdir=spec.workdir,
                    )
                    exec_id = created["Id"]
                    sock = client.exec_start(exec_id, socket=True)
                    raw = getattr(sock, "_sock", sock)
                    sockets.append(raw)
                    if spec.stdin is not None:
                        # a writer of its own: a process that writes output before reading all of its
                        # input would otherwise fill its pipe while we are still sending
                        feeder = threading.Thread(target=_feed, args=(raw, spec.stdin), daemon=True)
                        feeder.start()
                    try:
                        for stream, data in docker.utils.socket.frames_iter(raw, tty=False):
                            if data:
                                on_output("stderr" if stream == docker.utils.socket.STDERR else "stdout", data)
                    finally:
                        sock.close()
                    return _exec_exit(client, exec_id)
            finally:
                client.close()

        try:
            return await run_blocking(run)
        except asyncio.CancelledError:
            # the caller gave up (a host-side timeout): end the blocked read so the pump thread returns
            for raw in sockets:
                with contextlib.suppress(OSError):
                    raw.shutdown(socket.SHUT_RDWR)
            raise
        except OSError as exc:
            raise EngineError(f"the exec stream broke: {exc}") from exc

    async def stats(self, container_id: str) -> dict[str, Any] | None:
        def stats() -> dict[str, Any] | None:
            try:
                data = self.api.stats(container_id, stream=False, one_shot=True)
            except docker.errors.NotFound:
                return None
            except ValueError:  # an empty body: Podman's answer for a container that has just exited
                return None
            mem = data.get("memory_stats") or {}
            cpu = (data.get("cpu_stats") or {}).get("cpu_usage") or {}
            if mem.get("usage") is None and (data.get("pids_stats") or {}).get("current") is None:
                return None  # a stopped container: Docker answers with zeros and empty sections
            return {
                "memory_bytes": mem.get("usage"),
                "memory_max_bytes": mem.get("max_usage"),
                "cpu_total_ns": cpu.get("total_usage"),
                "pids": (data.get("pids_stats") or {}).get("current"),
            }

        try:
            return await self._call("sampling the container's resource use", stats, retry_transient=False)
        except DadSandboxError:
            return None

    async def list_by_label(self, label: str, value: str | None = None) -> list[ContainerState]:
        selector = f"{label}={value}" if value is not None else label

        def listing() -> list[ContainerState]:
            items = self.api.containers(all=True, filters={"label": selector})
            states = []
            for item in items:
                try:
                    states.append(_state_from_inspect(self.api.inspect_container(item["Id"])))
                except docker.errors.NotFound:
                    continue
            return states

        return await self._call(f"listing containers labelled {selector}", listing)

    async def create_volume(self, name: str, labels: dict[str, str]) -> None:
        await self._call(f"creating volume {name}", lambda: self.api.create_volume(name=name, labels=labels),
                         retry_transient=False)

    async def remove_volume(self, name: str) -> None:
        def remove() -> None:
            try:
                self.api.remove_volume(name, force=True)
            except docker.errors.NotFound:
                return

        await self._call(f"removing volume {name}", remove)

    async def list_volumes(self, label: str) -> list[dict[str, Any]]:
        def listing() -> list[dict[str, Any]]:
            found = self.api.volumes(filters={"label": label}).get("Volumes") or []
            return [{"name": v["Name"], "labels": dict(v.get("Labels") or {})} for v in found]

        return await self._call(f"listing volumes labelled {label}", listing)

    async def put_archive(self, container_id: str, path: str, archive: IO[bytes]) -> None:
        def put() -> None:
            # a client without a read timeout: a big archive takes the engine a while to unpack
            client = self._client(timeout=None, version=self.api.api_version)
            try:
                if not client.put_archive(container_id, path, archive):
                    raise EngineError(f"the engine refused the archive for {path} in container {container_id[:12]}")
            finally:
                client.close()

        await self._call(f"copying files into {path} of the container", put, retry_transient=False)

    async def get_archive(
        self, container_id: str, path: str, consume: Callable[[Iterator[bytes]], T], *, budget: float | None = None
    ) -> T:
        def get() -> T:
            # a client of its own: closing it drops the connection, so a consumer that stopped early
            # (a quota) ends the transfer instead of leaving unread data on a pooled connection
            client = self._client(version=self.api.api_version)
            watchdog: threading.Timer | None = None
            try:
                # Not ``client.get_archive``: it takes the socket's read timeout away for the stream,
                # and a consumer checks its own budget only between chunks, so an engine that went
                # silent after the headers, or drips a byte at a time, held this thread forever. Here
                # the read timeout stays and a watchdog shuts the socket down at the budget.
                sdk: Any = client  # the SDK's own request helpers (not in its type stubs)
                response = sdk._get(sdk._url("/containers/{0}/archive", container_id),
                                    params={"path": path}, stream=True, headers={"Accept-Encoding": "identity"})
                sdk._raise_for_status(response)
                sock = sdk._get_raw_response_socket(response)
                watchdog = threading.Timer(budget if budget is not None else self._call_timeout, _hang_up, (sock,))
                watchdog.daemon = True
                watchdog.start()
                return consume(response.iter_content(1 << 20, decode_unicode=False))
            finally:
                if watchdog is not None:
                    watchdog.cancel()
                client.close()

        return await self._call(f"copying {path} out of the container", get, retry_transient=False)

    async def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None


def _runtime_ignored(runtime: str | None) -> str:
    return (f"the engine ignores the OCI runtime a container asks for (asked {runtime!r}; Podman's Docker API "
            "does this), so this policy's isolation cannot be had here: run it on Docker with that runtime "
            "registered ('make engine RUNTIME=runsc'), or use a runc policy")


def _feed(sock: socket.socket, data: bytes) -> None:
    """Write an exec's stdin and close our side, so the process reads EOF (errors: it stopped reading)."""
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _hang_up(sock: Any) -> None:
    """End a blocked read on a response's socket (the SDK hands back a socket or a wrapper of one)."""
    raw = getattr(sock, "_sock", sock)
    with contextlib.suppress(OSError, AttributeError):
        raw.shutdown(socket.SHUT_RDWR)


def _exec_exit(client: docker.APIClient, exec_id: str) -> ExecExit:
    """The exit code once the engine has it: the stream can end a moment before ``Running`` turns false."""
    for _ in range(200):
        data = client.exec_inspect(exec_id)
        if not data.get("Running"):
            code = data.get("ExitCode")
            return ExecExit(exit_code=int(code) if code is not None else None, pid=data.get("Pid") or None)
        time.sleep(0.005)
    return ExecExit(exit_code=None, pid=data.get("Pid") or None)


@functools.cache
def default_engine() -> DockerEngine:
    """One shared engine per process (connections are pooled inside the SDK client)."""
    return DockerEngine()


__all__ = ["ContainerGone", "DockerEngine", "default_engine"]
