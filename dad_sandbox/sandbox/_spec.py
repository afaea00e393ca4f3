"""Policy + run -> :class:`ContainerSpec`: pure code, no engine calls, shared by every entry point."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dad_sandbox._version import __version__
from dad_sandbox.run import RunContext
from dad_sandbox.sandbox import _labels
from dad_sandbox.sandbox._ownership import RunUser
from dad_sandbox.sandbox._policy import Policy
from dad_sandbox.sandbox.engine import ContainerSpec, Mount

CONTAINER_PROJECT = "/dad/project"
CONTAINER_RUN_ROOT = "/dad/runs"
REQUEST_ENV = "DAD_RUN_REQUEST"


def container_run_dir(run_id: str) -> str:
    return f"{CONTAINER_RUN_ROOT}/{run_id}"


def build_spec(
    ctx: RunContext,
    policy: Policy,
    user: RunUser,
    command: list[str],
    *,
    deadline: float,
    request: dict[str, object] | None = None,
) -> ContainerSpec:
    """The container for one run: run dir read-write, project (and previous run) read-only."""
    mounts = [
        Mount(str(ctx.project_root), CONTAINER_PROJECT, read_only=True),
        Mount(str(ctx.run_dir), container_run_dir(ctx.run_id), read_only=False),
    ]
    prev: Path | None = ctx.previous_run_dir
    if prev is not None:
        mounts.append(Mount(str(prev), container_run_dir(prev.name), read_only=True))
    env = {
        "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "DAD_RUN_ID": ctx.run_id,
        "DAD_RUN_DIR": container_run_dir(ctx.run_id),
        # an allow-list: nothing of the host's environment reaches the run unless the policy names it
        **{name: os.environ[name] for name in policy.env_allow if name in os.environ},
        **policy.env,
    }
    if request is not None:
        env[REQUEST_ENV] = json.dumps(request)
    labels = {
        _labels.RUN_ID: ctx.run_id,
        _labels.DEADLINE: f"{deadline:.3f}",
        _labels.RUN_DIR: str(ctx.run_dir),
        _labels.VERSION: __version__,
        **_labels.supervisor_identity(),
    }
    return ContainerSpec(
        image=policy.image_ref,
        command=tuple(command),
        labels=labels,
        env=env,
        user=user.docker_user,
        working_dir=container_run_dir(ctx.run_id),
        mounts=tuple(mounts),
        tmpfs={path: f"size={size},mode=1777" for path, size in policy.tmpfs.items()},
        cpus=policy.cpus,
        memory=policy.memory,
        pids_limit=policy.pids_limit,
        network=policy.network,
        read_only_root=policy.read_only_root,
        cap_drop=tuple(policy.cap_drop),
        cap_add=tuple(policy.cap_add),
        no_new_privileges=policy.no_new_privileges,
        init=policy.init,
        runtime=policy.runtime,
        ulimits={"fsize": policy.max_file_size} if policy.max_file_size else {},
    )
