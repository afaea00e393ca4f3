"""Run one hostile agent and check that it was contained."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dad_sandbox import IsolatedExecution, RunContext, RunStatus, load_policy
from dad_sandbox.run import RunMetadata, read_metadata
from dad_sandbox.sandbox import RunResult


@dataclass
class Contained:
    result: RunResult
    ctx: RunContext
    metadata: RunMetadata


def snapshot(root: Path, *, skip: Path | None = None) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root`` but ``skip``: type, mode, owner, size and content hash (links not followed)."""
    out: dict[str, tuple[Any, ...]] = {}
    for path in sorted([root, *root.rglob("*")]):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
        out[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, st.st_uid, st.st_gid,
                                            st.st_size if digest else None, digest)
    return out


def attack(
    name: str,
    project: Path,
    host_dir: Path,
    runtime: str,
    argv: list[str],
    *,
    expect: set[tuple[str, str | None]],
    record: list[dict[str, Any]],
    defends: str,
    run_root: Path | None = None,
    **overrides: Any,
) -> Contained:
    """Run ``argv`` as a hostile run and assert the four containment properties.

    ``run_root``: where the runs go (default: beside the host folder, outside the project).
    """
    policy = load_policy("gvisor" if runtime == "runsc" else "untrusted")
    if overrides:
        policy = policy.with_overrides(**overrides)
    before_host = snapshot(host_dir)
    before_project = snapshot(project, skip=run_root) if run_root else snapshot(project)
    run_root = run_root or host_dir.parent / "runs"
    ctx = RunContext("attack", project, run_root=run_root)
    ctx.setup_run(run_id_prefix=name.replace("-", "_")[:40])

    async def go() -> tuple[RunResult, RunResult]:
        async with IsolatedExecution(ctx, policy) as execution:
            hostile = await execution.run_command(argv)
        nxt = RunContext("next", project, run_root=run_root)
        nxt.setup_run()
        async with IsolatedExecution(nxt, policy) as execution:
            after = await execution.run_command(["true"])
        return hostile, after

    result, after = asyncio.run(go())
    md = read_metadata(ctx.run_dir)
    got = (md.status.value, md.reason)
    row = {"attack": name, "runtime": runtime, "status": md.status.value, "reason": md.reason,
           "defended_by": defends, "contained": False}
    record.append(row)
    assert got in expect, f"{name}: got {got}, expected one of {sorted(expect, key=str)}; error: {md.error}"
    assert snapshot(host_dir) == before_host, f"{name}: a host file outside the run dir changed"
    after_project = snapshot(project, skip=run_root) if run_root else snapshot(project)
    assert after_project == before_project, f"{name}: the project dir changed"
    assert after.status == RunStatus.COMPLETED, f"{name}: the supervisor did not serve the next run: {after.error}"
    row["contained"] = True
    return Contained(result, ctx, md)


def host_sentinels(tmp_path: Path) -> Path:
    """A host folder outside every run dir with files an attack would want to reach."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret.txt").write_text("host secret\n")
    (host / "secret.txt").chmod(0o600)
    (host / "config.ini").write_text("[x]\ny=1\n")
    (host / "dir").mkdir()
    (host / "dir" / "inner.txt").write_text("inner\n")
    return host


__all__ = ["Contained", "attack", "host_sentinels", "os"]
