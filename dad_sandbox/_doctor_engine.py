"""``dad-sandbox doctor``: can this engine start a run container, and if not, what to install or set.

Why a real start and not a version check: the failures seen on Docker-compatible engines (Podman)
are about the machine, not the API: a missing init binary, default rlimits the host does not
allow, a runtime that refuses the cgroup layout. Only creating and starting a container shows
them, so the doctor does it once (the runner image, ``true``, no network, a memory limit and an
rlimit as a run has) through the same engine code as runs, and translates the engine's message.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dad_sandbox.errors import DadSandboxError

#: engine message fragment -> what to do about it
_FIXES: tuple[tuple[str, str], ...] = (
    ("container-init binary not found",
     "install the engine's init binary (Podman on Debian: apt-get install catatonit); 'make engine ENGINE=podman' does it"),
    ("rlimit",
     "the engine sets rlimits its service may not raise: set containers.conf default_ulimits for nofile and nproc to the "
     "service's own hard limits ('make engine ENGINE=podman' writes /etc/dad-sandbox/containers.conf)"),
    ("hybrid mode",
     "crun refuses cgroup hybrid mode: set runtime = \"runc\" in containers.conf [engine]"),
    ("seccomp",
     "the engine refused the seccomp profile; check that it reads profiles like Docker or from a file it can see"),
)


def fix_for(message: str) -> str:
    """What to do about an engine's refusal to start a container."""
    for fragment, fix in _FIXES:
        if fragment in message:
            return fix
    return "read the engine's message above; 'dad-sandbox exec -- true' shows the same failure as a run"


def engine_name(version: dict[str, Any]) -> str:
    """The engine as it names itself in ``/version`` (Podman lists a "Podman Engine" component)."""
    for component in version.get("Components") or []:
        if isinstance(component, dict) and str(component.get("Name", "")).startswith("Podman"):
            return f"Podman {component.get('Version') or version.get('Version')}"
    return f"Docker {version.get('Version')}"


async def _probe(image: str) -> str | None:
    from dad_sandbox.sandbox import load_policy
    from dad_sandbox.sandbox.engine import ContainerSpec
    from dad_sandbox.sandbox.engine._docker import DockerEngine

    engine = DockerEngine(call_timeout=20)
    spec = ContainerSpec(
        image=image, command=("true",), labels={"dad.probe": "doctor"}, network="none", memory=64 << 20,
        ulimits={"fsize": 1 << 20}, tmpfs={"/tmp": "size=1m"}, init=False,
        seccomp_profile=load_policy("untrusted").seccomp_profile.text,
    )
    container_id: str | None = None
    try:
        container_id = await engine.create(spec)
        await engine.start(container_id)
        code = await engine.wait(container_id, 20)
        state = await engine.inspect(container_id)
        if code != 0 or state.started_at is None:
            return state.error or f"the probe container exited {code}"
        return None
    except DadSandboxError as exc:
        return str(exc)
    finally:
        if container_id is not None:
            try:
                await engine.remove(container_id)
            except DadSandboxError:
                pass
        await engine.close()


def start_probe(image: str) -> str | None:
    """Create, start and remove one container like a run's; the engine's error, or None if it ran."""
    return asyncio.run(_probe(image))


__all__ = ["engine_name", "fix_for", "start_probe"]
