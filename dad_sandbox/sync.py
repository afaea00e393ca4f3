"""Synchronous entry points for callers without an event loop (the CLI, scripts).

Async is the only implementation; this module only wraps it with ``asyncio.run`` and refuses
clearly when called from inside a running loop (where ``await`` is the right call).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from dad_sandbox import _signals
from dad_sandbox.errors import DadSandboxError, ExecutionStateError, ImageNotFound, RerunTargetError
from dad_sandbox.run._context import RunContext
from dad_sandbox.run._layout import STATIC_INPUTS_DIR, STATIC_INPUTS_FILE
from dad_sandbox.run._status import RunReason, RunStatus
from dad_sandbox.sandbox._isolated import IsolatedExecution
from dad_sandbox.sandbox._policy import Policy, load_policy
from dad_sandbox.sandbox._reproduce import Reproduction, check_image_present, plan, previous_run
from dad_sandbox.sandbox._result import RunResult

T = TypeVar("T")


def _interrupted(ctx: RunContext) -> RunResult:
    """After Ctrl-C (or SIGTERM/SIGHUP) the supervisor has already killed the container and
    recorded ``cancelled``; a run interrupted before it reached the supervisor is recorded here."""
    if ctx.is_set_up and not ctx.metadata.status.is_terminal:
        ctx.record(status=RunStatus.CANCELLED, reason=RunReason.CANCELLED, error="interrupted before its container was created")
    return RunResult.from_metadata(ctx.metadata, ctx.run_dir)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, or a clear error inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _signals.run(coro)  # SIGINT, SIGTERM and SIGHUP cancel the run, whatever was inherited
    coro.close()
    raise ExecutionStateError("dad_sandbox.sync functions cannot run inside an event loop; await the async API instead")


async def _launch(
    ctx: RunContext, what: list[str] | str, policy: str | Path | Policy, timeout: float | None, on_event: Any = None,
    reproduction: Reproduction | None = None,
) -> RunResult:
    """Run ``what`` - an argv, or a component's ``module:attr`` - in its own container and wait for it.

    A re-run or replay first checks that the recorded image id still exists (else ``image_missing``).
    """
    async with IsolatedExecution(ctx, policy, timeout=timeout, on_event=on_event) as execution:
        if reproduction is not None:
            try:
                await check_image_present(execution.engine, reproduction)
            except ImageNotFound as exc:
                ctx.record(status=RunStatus.FAILED, reason=RunReason.IMAGE_MISSING, error=str(exc))
                raise
        if isinstance(what, str):
            return await execution.run_component(what)
        return await execution.run_command(what)


def exec_command(
    argv: list[str],
    *,
    policy: str | Path | Policy = "untrusted",
    timeout: float | None = None,
    project_root: Path | str = ".",
    run_root: Path | str | None = None,
    run_id_prefix: str | None = None,
    on_event: Any = None,
) -> RunResult:
    """Run one command line as a run in its own container and wait for it."""
    ctx = RunContext("exec", project_root, run_root=run_root)
    ctx.setup_run(run_id_prefix=run_id_prefix)
    try:
        return run_sync(_launch(ctx, argv, policy, timeout, on_event))
    except KeyboardInterrupt:
        return _interrupted(ctx)



def run_component(
    reference: str,
    *,
    policy: str | Path | Policy | None = None,
    timeout: float | None = None,
    project_root: Path | str = ".",
    run_root: Path | str | None = None,
    run_id_prefix: str | None = None,
    static_inputs_file: Path | None = None,
    static_inputs: dict[str, Any] | None = None,
    previous_run_id: str | None = None,
    start_hierarchy_path: str | None = None,
    replace_inputs: bool = False,
    image: str | None = None,
    replay_of: str | None = None,
    on_event: Any = None,
) -> RunResult:
    """Run the component ``module:attribute`` (importable from ``project_root``) in its own container.

    The component is never imported in this process: only the container imports it, checks the
    static inputs against its nodes before any node runs, and reports back.

    With ``previous_run_id`` (and ``start_hierarchy_path``) it is a re-run, reproducing that run:
    its recorded policy and image id are used unless ``policy``/``image`` say otherwise, and its
    static inputs are kept, with ``static_inputs_file``/``static_inputs`` overlaid per node (a node
    named there gets the new value; the others keep theirs). ``replace_inputs=True`` drops the
    previous run's inputs instead.

    Raises:
        ComponentReferenceError: ``reference`` is not of the form ``package.module:attribute``.
        RerunTargetError: the previous run does not exist.
        ImageNotFound: a re-run's recorded image id is gone (pass ``image``).
    """
    from dad_sandbox.runner import provisional_root_id

    root_id = provisional_root_id(reference)
    run_root_path = Path(run_root).resolve() if run_root is not None else Path(project_root).resolve() / "runs"
    reproduction = None
    if previous_run_id is not None:
        _, previous = previous_run(run_root_path, previous_run_id)
        reproduction = plan(previous, policy=policy, image=image, timeout=timeout)
    ctx = RunContext(root_id, project_root, run_root=run_root, previous_run_id=previous_run_id,
                     start_hierarchy_path=start_hierarchy_path)
    ctx.setup_run(run_id_prefix=run_id_prefix)
    try:
        if ctx.previous_run_dir is not None and not replace_inputs:
            ctx.static_inputs.load_file(ctx.previous_run_dir / STATIC_INPUTS_DIR / STATIC_INPUTS_FILE)
        if static_inputs_file is not None:
            ctx.static_inputs.load_file(Path(static_inputs_file))  # overlays per node: a key it names is replaced
        for key, value in (static_inputs or {}).items():
            ctx.register_node_static_input(key, value)
        ctx.read_static_inputs()
    except DadSandboxError as exc:  # a pre-flight failure ends the run at once, never `initialized`
        ctx.record(status=RunStatus.FAILED, reason=RunReason.INVALID_INPUTS, error=str(exc))
        raise
    effective: str | Path | Policy = policy if policy is not None else "untrusted"
    if reproduction is not None:
        effective = reproduction.policy
        ctx.record(reproduction=reproduction.to_json())
    elif image is not None:
        effective = load_policy(effective).with_overrides(image=image)
    if replay_of is not None:
        ctx.record(replay_of=replay_of)
    try:
        return run_sync(_launch(ctx, reference, effective, None if reproduction else timeout, on_event, reproduction))
    except KeyboardInterrupt:
        return _interrupted(ctx)


def replay(
    run_id: str,
    *,
    run_root: Path | str,
    image: str | None = None,
    on_event: Any = None,
) -> RunResult:
    """Run again what ``run_id`` ran, from its metadata alone: the same component (or argv), static
    inputs, re-run start, policy and image id. Compare the two with ``dad-sandbox runs diff``.

    Raises:
        RerunTargetError: no such run, or it recorded neither a component nor a command.
        ImageNotFound: its image id is gone from the engine (pass ``image``).
    """
    from dad_sandbox.runner import provisional_root_id

    root = Path(run_root).resolve()
    run_dir, md = previous_run(root, run_id)
    reproduction = plan(md, image=image)
    inputs = run_dir / STATIC_INPUTS_DIR / STATIC_INPUTS_FILE
    if md.command and not md.component:
        ctx = RunContext("exec", md.project_root, run_root=root)
        ctx.setup_run()
        ctx.record(reproduction=reproduction.to_json(), replay_of=run_id)
        try:
            return run_sync(_launch(ctx, list(md.command), reproduction.policy, None, on_event, reproduction))
        except KeyboardInterrupt:
            return _interrupted(ctx)
    if not md.component or ":" not in md.component:
        raise RerunTargetError(
            f"run {run_id} recorded no component reference or command (it ran {md.component or 'nothing'!r} "
            "in-process from an object); replay needs a 'module:attribute' component or a command"
        )
    previous = md.rerun.previous_run_id if md.rerun else None
    start = md.rerun.start_hierarchy_path if md.rerun else None
    ctx = RunContext(provisional_root_id(md.component), md.project_root, run_root=root, previous_run_id=previous,
                     start_hierarchy_path=start)
    ctx.setup_run()
    ctx.static_inputs.load_file(inputs)
    ctx.read_static_inputs()
    ctx.record(reproduction=reproduction.to_json(), replay_of=run_id)
    try:
        return run_sync(_launch(ctx, md.component, reproduction.policy, None, on_event, reproduction))
    except KeyboardInterrupt:
        return _interrupted(ctx)


class SyncRunHandle:
    """Blocking view of a :class:`~dad_sandbox.sandbox.RunHandle` owned by a :class:`SyncSupervisor`."""

    def __init__(self, handle: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = handle
        self._loop = loop
        self.run_id: str = handle.run_id
        self.run_dir: Path = handle.run_dir

    @property
    def status(self) -> Any:
        return self._handle.status

    def wait(self, timeout: float | None = None) -> RunResult:
        """Block until the run is final; ``TimeoutError`` if ``timeout`` passes first (the run goes on)."""
        result: RunResult = asyncio.run_coroutine_threadsafe(self._handle.wait(), self._loop).result(timeout)
        return result

    def cancel(self) -> None:
        self._loop.call_soon_threadsafe(self._handle.cancel)


class _BackgroundLoop:
    """An event loop in a daemon thread for the length of a ``with`` block; the sync facades' one
    piece of plumbing (their async objects live on it, their methods block on it)."""

    _thread_name = "dad-sandbox"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=self._thread_name, daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread

    def _open(self, opener: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Start the loop and run ``opener()`` on it; a failure stops the loop again and is raised."""
        self._start()
        try:
            return self._call(opener())
        except BaseException:
            self._stop()
            raise

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise ExecutionStateError(f"use {type(self).__name__} inside a `with` block")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._loop is not None and not self._loop.is_running():
            self._loop.close()
        self._loop = None


class SyncSupervisor(_BackgroundLoop):
    """The :class:`~dad_sandbox.sandbox.Supervisor` for code without an event loop.

    Its event loop runs in a background thread for the lifetime of the ``with`` block::

        with SyncSupervisor(max_parallel=4) as sup:
            handles = [sup.submit(["python3", "-c", f"print({i})"]) for i in range(10)]
            results = [h.wait() for h in handles]
    """

    _thread_name = "dad-sandbox-supervisor"

    def __init__(self, **kwargs: Any) -> None:
        from dad_sandbox.sandbox import Supervisor

        super().__init__()
        self._kwargs = kwargs
        self._supervisor_cls = Supervisor
        self._sup: Any = None

    def __enter__(self) -> SyncSupervisor:
        async def open_supervisor() -> Any:
            sup = self._supervisor_cls(**self._kwargs)
            await sup.__aenter__()
            return sup

        self._sup = self._open(open_supervisor)
        return self

    def submit(self, argv: list[str] | None = None, **kwargs: Any) -> SyncRunHandle:
        """Queue a run (same arguments as ``Supervisor.submit``); returns at once."""
        assert self._loop is not None

        async def submit() -> Any:
            return self._sup.submit(argv, **kwargs)

        return SyncRunHandle(asyncio.run_coroutine_threadsafe(submit(), self._loop).result(), self._loop)

    def recover(self) -> list[Any]:
        assert self._loop is not None
        found: list[Any] = asyncio.run_coroutine_threadsafe(self._sup.recover(wait=True), self._loop).result()
        return found

    def __exit__(self, *exc: object) -> None:
        try:
            if self._sup is not None and self._loop is not None:
                self._call(self._sup.__aexit__(*exc))
        finally:
            self._stop()


class SyncSession(_BackgroundLoop):
    """The :class:`~dad_sandbox.sandbox.Session` for code without an event loop.

    The async session runs on an event loop in a background thread for the ``with`` block; each
    method blocks until its coroutine there is done::

        with SyncSession(policy="untrusted", timeout="30m") as s:
            s.write_file("main.py", "print(6 * 7)")
            print(s.exec(["python3", "main.py"]).stdout)
    """

    _thread_name = "dad-sandbox-session"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self._kwargs = kwargs
        self._session: Any = None

    def __enter__(self) -> SyncSession:
        from dad_sandbox.sandbox._session import Session

        async def open_session() -> Any:
            session = Session(**self._kwargs)
            await session.start()
            return session

        self._session = self._open(open_session)
        return self

    @property
    def run_id(self) -> str:
        return str(self._session.run_id)

    @property
    def run_dir(self) -> Path:
        return Path(self._session.run_dir)

    @property
    def result(self) -> RunResult | None:
        return self._session.result if self._session is not None else None

    def exec(self, argv: list[str], **kwargs: Any) -> Any:
        """``Session.exec``, blocking; returns an ``ExecResult``."""
        return self._call(self._session.exec(argv, **kwargs))

    def exec_stream(self, argv: list[str], **kwargs: Any) -> Any:
        """``Session.exec_stream`` as a blocking iterator of ``ExecEvent``."""
        stream = self._session.exec_stream(argv, **kwargs)
        try:
            while True:
                try:
                    yield self._call(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._call(stream.aclose())

    def write_file(self, path: str, content: str | bytes) -> None:
        self._call(self._session.write_file(path, content))

    def read_file(self, path: str, text: bool = True) -> str | bytes:
        result: str | bytes = self._call(self._session.read_file(path, text=text))
        return result

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            if self._session is not None:
                self._call(self._session.close(cancel=exc_type is not None))
        finally:
            self._stop()

