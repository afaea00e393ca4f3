"""Policy + run -> :class:`ContainerSpec`: pure code, no engine calls, shared by every entry point."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from dad_sandbox._limits import INIT_DEADLINE_GRACE
from dad_sandbox._version import __version__
from dad_sandbox.errors import RunSetupError
from dad_sandbox.run import RunContext
from dad_sandbox.run._layout import RUNNER_DIR, STATIC_INPUTS_DIR, TRACE_DIR
from dad_sandbox.sandbox import _labels
from dad_sandbox.sandbox._egress_proxy import CONTAINER_DIR as EGRESS_DIR
from dad_sandbox.sandbox._egress_proxy import EgressProxy, forwarder_command, proxy_env
from dad_sandbox.sandbox._ownership import RunUser
from dad_sandbox.sandbox._policy import Policy
from dad_sandbox.sandbox.engine import ContainerSpec, Mount

CONTAINER_PROJECT = "/dad/project"
CONTAINER_RUN_ROOT = "/dad/runs"
REQUEST_ENV = "DAD_RUN_REQUEST"
#: tmpfs options of a mask: an empty folder nobody in the container can write.
MASK = "ro,size=4k,mode=0555"
#: PID 1 of a run container when the policy asks for an init (images/init/dad-init.c): it kills
#: the run at ``DAD_DEADLINE`` even when no supervisor is left on the host.
INIT_PATH = "/usr/local/bin/dad-init"
DEADLINE_ENV = "DAD_DEADLINE"
#: Set in warm-pool containers: the fd on which the waiter writes its run's deadline to dad-init, once.
DEADLINE_FD_ENV = "DAD_DEADLINE_FD"
#: dad-init's exit code when it killed the run at its deadline (as timeout(1))
INIT_DEADLINE_EXIT = 124
#: What dad-init keeps as root PID 1 (dropped for the run's processes): change to the run's user,
#: empty their bounding set, signal them.
INIT_CAPS = ("SETUID", "SETGID", "SETPCAP", "KILL")


def container_run_dir(run_id: str) -> str:
    return f"{CONTAINER_RUN_ROOT}/{run_id}"


def container_env_params(ctx: RunContext, dir_name: str) -> dict[str, str]:
    """The run's RunEnvParams as the container sees them (its run dir is mounted as ``dir_name``)."""
    run_dir = container_run_dir(dir_name)
    return {
        "run_id": ctx.run_id,
        "run_dir": run_dir,
        "run_root": CONTAINER_RUN_ROOT,
        "trace_dir": f"{run_dir}/{RUNNER_DIR}",  # .trace/ is read-only in the container
        "outcome_repo_dir": f"{CONTAINER_RUN_ROOT}/outcome/{ctx.layout.project_name}",
    }


def _masked_run_root(project_root: Path, run_root: Path) -> str | None:
    """Where the run root shows inside the container's read-only project mount, if it does.

    Raises:
        RunSetupError: the run root is the project root (every run would see every other run).
    """
    project, runs = project_root.resolve(), run_root.resolve()
    if runs == project:
        raise RunSetupError(
            f"the run root {runs} is the project root: each run would see every other run and the outcome "
            "repository; use a subfolder (the default is <project>/runs) or a folder outside the project"
        )
    if project not in runs.parents:
        return None
    return f"{CONTAINER_PROJECT}/{runs.relative_to(project).as_posix()}"


def build_spec(
    ctx: RunContext,
    policy: Policy,
    user: RunUser,
    command: list[str],
    *,
    deadline: float,
    request: dict[str, object] | None = None,
    egress: EgressProxy | None = None,
) -> ContainerSpec:
    """The container for one run: run dir read-write, project (and previous run) read-only.

    With an egress proxy (policy ``network = "allowlist"``), its socket folder is mounted read-only,
    the proxy variables are set and the command starts behind the in-container forwarder.
    """
    env = {"DAD_RUN_ID": ctx.run_id}
    if request is not None:
        env[REQUEST_ENV] = json.dumps({**request, "env_params": container_env_params(ctx, ctx.run_id)})
    extra_mounts: tuple[Mount, ...] = ()
    if egress is not None and egress.host_dir is not None:
        env.update(proxy_env())
        command = forwarder_command(egress.container_socket, command)
        extra_mounts = (Mount(str(egress.host_dir), EGRESS_DIR, read_only=True),)
    spec = container_spec(
        policy, user, command,
        project_root=ctx.project_root, run_root=ctx.run_root, run_dir=ctx.run_dir, dir_name=ctx.run_id,
        previous_run_dir=ctx.previous_run_dir, deadline=deadline, env=env, labels={_labels.RUN_ID: ctx.run_id},
    )
    return dataclasses.replace(spec, mounts=spec.mounts + extra_mounts) if extra_mounts else spec


def container_spec(
    policy: Policy,
    user: RunUser,
    command: list[str],
    *,
    project_root: Path,
    run_root: Path,
    run_dir: Path,
    dir_name: str,
    deadline: float,
    previous_run_dir: Path | None = None,
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    stdin_open: bool = False,
) -> ContainerSpec:
    """A run container, for a run (``build_spec``) or for a warm-pool slot that gets its run later.

    Mounts (DESIGN.md, trust boundary rule 3): the run dir read-write, but its host-owned
    ``static_inputs/`` read-only on top and ``.trace/`` hidden under an empty read-only tmpfs (a
    mount point can be neither written, renamed nor chmod-ed from inside); the project read-only,
    with the run root masked the same way when it lies inside the project, so a run sees neither
    other runs nor the outcome repository; a re-run's previous run dir read-only.
    """
    inside = container_run_dir(dir_name)
    mounts = [
        Mount(str(project_root), CONTAINER_PROJECT, read_only=True),
        Mount(str(run_dir), inside, read_only=False),
        Mount(str(run_dir / STATIC_INPUTS_DIR), f"{inside}/{STATIC_INPUTS_DIR}", read_only=True),
    ]
    tmpfs = {path: f"size={size},mode=1777" for path, size in policy.tmpfs.items()}
    if previous_run_dir is not None:
        previous = container_run_dir(previous_run_dir.name)
        mounts.append(Mount(str(previous_run_dir), previous, read_only=True))
        tmpfs[f"{previous}/{TRACE_DIR}"] = MASK  # its nodes' results are what a re-run needs, not the host's records
    tmpfs[f"{inside}/{TRACE_DIR}"] = MASK  # the host's own files: the run needs none of them
    masked = _masked_run_root(project_root, run_root)
    if masked is not None:
        tmpfs[masked] = MASK
    full_env = {
        "HOME": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "DAD_RUN_DIR": container_run_dir(dir_name),
        # an allow-list: nothing of the host's environment reaches the run unless the policy names it
        **{name: os.environ[name] for name in policy.env_allow if name in os.environ},
        **policy.env,
        **(env or {}),
    }
    container_user, cap_add = user.docker_user, tuple(policy.cap_add)
    if policy.init:
        full_env[DEADLINE_ENV] = f"{deadline + INIT_DEADLINE_GRACE:.3f}"
        if stdin_open:  # a warm-pool waiter: it hands dad-init its run's deadline when the run arrives
            full_env[DEADLINE_FD_ENV] = "3"
            command = ["--deadline-fd", "--", *command]
        else:
            command = ["--", *command]
        if user.uid != 0:
            # dad-init runs as root with just what it needs to become the run's user and to signal
            # it; the run's processes get uid:gid and no capability at all, so they cannot signal,
            # stop or trace their init (gVisor does not shield PID 1 from its namespace).
            container_user = "0:0"
            cap_add = tuple(dict.fromkeys([*cap_add, *INIT_CAPS]))
            command = [INIT_PATH, "--user", user.docker_user, *command]
        else:
            command = [INIT_PATH, *command]
    all_labels = {
        _labels.DEADLINE: f"{deadline:.3f}",
        _labels.RUN_DIR: str(run_dir),
        _labels.VERSION: __version__,
        **_labels.supervisor_identity(),
        **(labels or {}),
    }
    return ContainerSpec(
        image=policy.image_ref,
        command=tuple(command),
        labels=all_labels,
        env=full_env,
        user=container_user,
        working_dir=container_run_dir(dir_name),
        mounts=tuple(mounts),
        tmpfs=tmpfs,
        cpus=policy.cpus,
        memory=policy.memory,
        pids_limit=policy.pids_limit,
        # "allowlist" gives the container no network either: its way out is the egress proxy's socket
        network="none" if policy.network == "allowlist" else policy.network,
        read_only_root=policy.read_only_root,
        cap_drop=tuple(policy.cap_drop),
        cap_add=cap_add,
        no_new_privileges=policy.no_new_privileges,
        seccomp_profile=policy.seccomp_profile.text,
        init=False,  # dad-init is PID 1 instead of the engine's init (see INIT_PATH)
        runtime=policy.runtime,
        ulimits={"fsize": policy.max_file_size} if policy.max_file_size else {},
        stdin_open=stdin_open,
        placement=tuple(policy.placement),
    )
