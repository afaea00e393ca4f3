"""Does every Swarm node see the run root at the same path? Asked of the nodes themselves.

A run's files are bind-mounted from the run root, so a node that does not mount the shared storage
at the same path would either reject the task or, worse, run it on a local folder of the same name.
The probe writes a random token into a folder under the run root on this host, makes ONE global
service (one task per eligible node, restart none, the runs' placement) that bind-mounts that folder
read-only and compares the file with the token given in its environment, waits (bounded) for every
task to end, and reads each node's verdict: ok, ``rejected: <Swarm's error>``, or "sees other
content". The service and the probe folder are always removed; the service carries ``dad.probe=1``
and the supervisor's identity labels so leftovers can be found.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from dad_sandbox._version import __version__
from dad_sandbox.sandbox import _labels

PROBE_LABEL = "dad.probe"
SERVICE_PREFIX = "dad-probe-"
#: Longest wait for every node's task to end (a task only reads one small file).
PROBE_TIMEOUT = 60.0
_TARGET = "/dad-probe"
_ENDED = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned", "remove"})
# exits 0 when the file holds exactly the token, 1 otherwise (missing file, other content)
_COMMAND = ["sh", "-c", f'test "$(cat {_TARGET}/token 2>/dev/null)" = "$DAD_PROBE_TOKEN"']


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node's answer: ``ok``, and a detail ("sees the run root", "rejected: …", …)."""

    node_id: str
    hostname: str
    ok: bool
    detail: str


def verdict(task: dict[str, Any]) -> tuple[bool, str]:
    """What one ended probe task says about its node (pure)."""
    status = task.get("Status") or {}
    state = status.get("State") or "unknown"
    err = status.get("Err") or status.get("Message") or "?"
    code = (status.get("ContainerStatus") or {}).get("ExitCode")
    if state == "complete" and code == 0:
        return True, "sees the run root"
    if state == "rejected" or not (status.get("ContainerStatus") or {}).get("ContainerID"):
        return False, f"rejected: {err}"
    if code == 1:
        return False, "sees other content at the run root's path (not the shared storage)"
    return False, f"probe task {state} (exit {code}): {err}"


def probe_run_root(api: docker.APIClient, run_root: Path, image: str, *, placement: Sequence[str] = (),
                   timeout: float = PROBE_TIMEOUT) -> list[NodeView]:
    """Every eligible node's view of ``run_root`` (blocking). Empty when no node took a task in time.

    Raises:
        docker.errors.APIError: the manager refused the service (the caller maps it).
        OSError: the probe folder could not be written on this host.
    """
    token = secrets.token_hex(16)
    name = SERVICE_PREFIX + secrets.token_hex(8)
    run_root.mkdir(parents=True, exist_ok=True)
    folder = run_root / f".{name}"
    try:
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)  # readable by the task's user, whatever the umask
        token_file = folder / "token"
        token_file.write_text(token)
        token_file.chmod(0o644)
        # the run-dir label lets `dad-sandbox gc` (sweep_leftovers) find a dead supervisor's probe under a run root
        labels = {PROBE_LABEL: "1", _labels.VERSION: __version__, _labels.RUN_DIR: str(folder),
                  **_labels.supervisor_identity()}
        task_template: dict[str, Any] = {
            "ContainerSpec": {
                "Image": image, "Args": _COMMAND, "Env": [f"DAD_PROBE_TOKEN={token}"], "Labels": labels,
                "Mounts": [{"Target": _TARGET, "Source": str(folder), "Type": "bind", "ReadOnly": True}],
                "ReadOnly": True, "CapabilityDrop": ["ALL"], "StopSignal": "SIGKILL", "StopGracePeriod": 0,
            },
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        }
        if placement:
            task_template["Placement"] = {"Constraints": list(placement)}
        # no image resolution, as for runs: the nodes hold the image, no registry is asked
        sid = str(api.create_service(name=name, task_template=task_template, labels=labels, mode={"Global": {}})["ID"])
        try:
            tasks = _wait_ended(api, sid, time.monotonic() + timeout)
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_service(sid)
        names = {n["ID"]: (n.get("Description") or {}).get("Hostname") or n["ID"][:12] for n in api.nodes()}
        views = []
        for node, task in sorted(tasks.items()):
            if (task.get("Status") or {}).get("State") in _ENDED:
                ok, detail = verdict(task)
            else:
                ok, detail = False, f"no answer within {timeout:.0f} s (task {task.get('Status', {}).get('State')})"
            views.append(NodeView(node, names.get(node, node[:12]), ok, detail))
        return sorted(views, key=lambda v: v.hostname)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _wait_ended(api: docker.APIClient, sid: str, end: float) -> dict[str, dict[str, Any]]:
    """The latest task per node once all have ended and their number held still for a poll (or at ``end``)."""
    last: dict[str, dict[str, Any]] = {}
    while True:
        latest: dict[str, dict[str, Any]] = {}
        for task in api.tasks(filters={"service": sid}):
            node = task.get("NodeID")
            if node and (node not in latest or (task.get("CreatedAt") or "") > (latest[node].get("CreatedAt") or "")):
                latest[node] = task
        ended = latest and all((t.get("Status") or {}).get("State") in _ENDED for t in latest.values())
        if (ended and latest.keys() == last.keys()) or time.monotonic() >= end:
            return latest
        last = latest
        time.sleep(0.5)


def failure_message(run_root: Path, views: list[NodeView]) -> str | None:
    """None when every node sees the run root; else what is wrong and how to fix it (pure)."""
    if not views:
        return (f"no Swarm node took the run-root probe for {run_root}: check that nodes are ready and match the "
                "policy's placement")
    bad = [v for v in views if not v.ok]
    if not bad:
        return None
    where = "; ".join(f"{v.hostname}: {v.detail}" for v in bad)
    return (f"Swarm nodes do not see the run root {run_root} at the same path ({where}). Mount the shared storage "
            f"at {run_root} on {', '.join(v.hostname for v in bad)}, or keep runs off them with the policy's placement")


__all__ = ["PROBE_LABEL", "NodeView", "failure_message", "probe_run_root", "verdict"]
