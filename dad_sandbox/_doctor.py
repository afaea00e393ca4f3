"""``dad-sandbox doctor``: what is wrong with this machine's set-up, and how to fix it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from dad_sandbox.errors import DadSandboxError
from dad_sandbox.sandbox._policy import runner_tag


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


def run_checks(run_root: Path) -> list[Check]:
    """Every check, in the order a user would fix them."""
    from dad_sandbox._doctor_engine import engine_name, fix_for, start_probe
    from dad_sandbox.sandbox import available_policies, load_policy
    from dad_sandbox.sandbox.engine._docker import DockerEngine
    from dad_sandbox.sandbox.engine._errors import map_docker_errors

    checks: list[Check] = []
    engine = DockerEngine(call_timeout=5)
    try:
        with map_docker_errors("asking the engine"):
            info = engine.api.info()
            version = engine.api.version()
    except DadSandboxError as exc:
        checks.append(Check("engine", False, str(exc).splitlines()[0],
                            "run 'make engine' (root Debian) or start Docker and check 'docker info'"))
        info, version = None, None
    if info is not None and version is not None:
        checks.append(Check("engine", True, f"{engine_name(version)} (API {version.get('ApiVersion')}), "
                                            f"{info.get('Driver')} storage, cgroup v{info.get('CgroupVersion', '?')}"))
        runtimes = sorted((info.get("Runtimes") or {}).keys())
        checks.append(Check("runtimes", True, ", ".join(runtimes) + ("" if "runsc" in runtimes else
                                                                      " (gVisor runsc not registered)")))
        image = f"dad-sandbox-runner:{runner_tag()}"
        try:
            with map_docker_errors("inspecting the runner image"):
                data = engine.api.inspect_image(image)
            checks.append(Check("image", True, f"{image} {data['Id'][:19]} ({data.get('Size', 0) // (1 << 20)} MiB)"))
            refused = start_probe(image)
            checks.append(Check("start", refused is None,
                                "a container like a run's starts" if refused is None else refused.splitlines()[0],
                                None if refused is None else fix_for(refused)))
        except DadSandboxError:
            checks.append(Check("image", False, f"{image} is not on the engine", "run 'make image' or 'dad-sandbox image build'"))
    else:
        runtimes = []
    probe = run_root if run_root.exists() else next((p for p in run_root.parents if p.exists()), Path("/"))
    usage = shutil.disk_usage(probe)
    free_gib = usage.free / (1 << 30)
    checks.append(Check("disk", free_gib >= 1, f"{free_gib:.1f} GiB free at {probe}",
                        None if free_gib >= 1 else "free some space: runs and images need at least 1 GiB"))
    names = available_policies()
    bad: list[str] = []
    for name in names:
        try:
            policy = load_policy(name)
            if runtimes and policy.runtime not in runtimes:
                bad.append(f"{name}: runtime {policy.runtime!r} is not registered with the engine")
        except DadSandboxError as exc:
            bad.append(f"{name}: {exc}")
    if os.environ.get("DAD_SANDBOX_ENGINE", "").strip().lower() == "swarm" and info is not None:
        checks += swarm_run_root_checks(run_root, f"dad-sandbox-runner:{runner_tag()}")
    checks.append(Check("policies", not bad, "; ".join(bad) if bad else ", ".join(names),
                        "fix the policy file, or for runsc: 'make engine RUNTIME=runsc'" if bad else None))
    return checks


def swarm_run_root_checks(run_root: Path, image: str) -> list[Check]:
    """One check per Swarm node: does it see ``run_root`` at the same path (the shared storage)?"""
    from dad_sandbox.sandbox.engine._errors import map_docker_errors
    from dad_sandbox.sandbox.engine._swarm import default_swarm_engine
    from dad_sandbox.sandbox.engine._swarm_probe import probe_run_root

    try:
        with map_docker_errors(f"probing the run root {run_root} on every Swarm node"):
            views = probe_run_root(default_swarm_engine().api, run_root, image)
    except (DadSandboxError, OSError) as exc:
        return [Check("swarm nodes", False, str(exc).splitlines()[0],
                      "point DOCKER_HOST at a Swarm manager whose nodes hold the runner image")]
    if not views:
        return [Check("swarm nodes", False, "no node took the run-root probe",
                      "check 'docker node ls': nodes must be ready and active")]
    return [Check(f"node {v.hostname}", v.ok, v.detail,
                  None if v.ok else f"mount the shared storage at {run_root} on node {v.hostname}, "
                                    "or keep runs off it with placement")
            for v in views]
