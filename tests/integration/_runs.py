"""Helpers shared by the integration tests: one shell command as one isolated run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dad_sandbox import IsolatedExecution, RunContext, load_policy
from dad_sandbox.sandbox import RunResult


def run_cmd(project: Path, script: str, *, run_root: Path | None = None, **overrides: Any) -> tuple[RunContext, RunResult]:
    """Run ``sh -c script`` under the untrusted policy (with ``overrides``); return its context and result."""
    ctx = RunContext("exec", project, run_root=run_root or project.parent / "runs")
    ctx.setup_run()
    policy = load_policy("untrusted").with_overrides(**overrides) if overrides else load_policy("untrusted")

    async def go() -> RunResult:
        async with IsolatedExecution(ctx, policy) as execution:
            return await execution.run_command(["sh", "-c", script])

    return ctx, asyncio.run(go())
