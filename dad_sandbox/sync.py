"""Synchronous entry points for callers without an event loop (the CLI, scripts).

Async is the only implementation; this module only wraps it with ``asyncio.run`` and refuses
clearly when called from inside a running loop (where ``await`` is the right call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from dad_sandbox.errors import ExecutionStateError
from dad_sandbox.run import RunContext
from dad_sandbox.runner import import_component, runner_for
from dad_sandbox.sandbox import IsolatedExecution, Policy, RunResult

T = TypeVar("T")


def _interrupted(ctx: RunContext) -> RunResult:
    """After Ctrl-C the supervisor has already killed the container and recorded ``cancelled``."""
    return RunResult.from_metadata(ctx.metadata, ctx.run_dir)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, or a clear error inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise ExecutionStateError("dad_sandbox.sync functions cannot run inside an event loop; await the async API instead")


async def _exec(ctx: RunContext, argv: list[str], policy: str | Path | Policy, timeout: float | None) -> RunResult:
    async with IsolatedExecution(ctx, policy, timeout=timeout) as execution:
        return await execution.run_command(argv)


def exec_command(
    argv: list[str],
    *,
    policy: str | Path | Policy = "untrusted",
    timeout: float | None = None,
    project_root: Path | str = ".",
    run_root: Path | str | None = None,
    run_id_prefix: str | None = None,
) -> RunResult:
    """Run one command line as a run in its own container and wait for it."""
    ctx = RunContext("exec", project_root, run_root=run_root)
    ctx.setup_run(run_id_prefix=run_id_prefix)
    try:
        return run_sync(_exec(ctx, argv, policy, timeout))
    except KeyboardInterrupt:
        return _interrupted(ctx)


async def _run(ctx: RunContext, reference: str, policy: str | Path | Policy, timeout: float | None) -> RunResult:
    component = import_component(reference)
    runner = runner_for(component, ctx, reference=reference)
    async with IsolatedExecution(ctx, policy, timeout=timeout) as execution:
        return await execution.run(runner)


def run_component(
    reference: str,
    *,
    policy: str | Path | Policy = "untrusted",
    timeout: float | None = None,
    project_root: Path | str = ".",
    run_root: Path | str | None = None,
    run_id_prefix: str | None = None,
    static_inputs_file: Path | None = None,
) -> RunResult:
    """Import ``module:attribute`` (from ``project_root``) and run it in its own container."""
    import sys

    root = str(Path(project_root).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    component = import_component(reference)
    ctx = RunContext(component.id, project_root, run_root=run_root)
    ctx.setup_run(run_id_prefix=run_id_prefix)
    if static_inputs_file is not None:
        ctx.static_inputs.load_file(Path(static_inputs_file))
    ctx.read_static_inputs()
    try:
        return run_sync(_run(ctx, reference, policy, timeout))
    except KeyboardInterrupt:
        return _interrupted(ctx)
