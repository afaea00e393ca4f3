"""Runs that never got a container (or lost it) and whose owner process is gone.

Why a scan of run dirs and not only of containers: a supervisor killed between ``setup_run()``
and container create, or a pre-flight step that crashed the process, leaves a run dir that no
container label points to. Recovery and ``gc`` find those here and end them ``abandoned``, so no
run stays ``initialized`` or ``running`` forever. One unreadable run dir never stops the scan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dad_sandbox._logging import get_logger
from dad_sandbox.run import RunContext, RunReason, RunStatus, read_metadata
from dad_sandbox.run._layout import OUTCOME_DIR
from dad_sandbox.run._metadata import RunMetadata
from dad_sandbox.run._owner import process_alive

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ContainerlessRun:
    """A run dir that is not final, has no container and whose owner is gone."""

    run_id: str
    run_dir: Path
    state: str
    owner: str
    detail: str


def _owner(md: RunMetadata) -> tuple[str | None, object, str | None]:
    """(host, pid, start ticks) of the process that owns the run, from its metadata."""
    if md.owner:
        return md.owner.get("host"), md.owner.get("pid"), md.owner.get("start")
    sup = md.supervisor or {}
    return sup.get("host"), sup.get("pid"), None


def abandon_containerless(
    run_root: Path, known_runs: set[str], known_containers: set[str], *, dry_run: bool
) -> list[ContainerlessRun]:
    """End ``abandoned`` (or only list, with ``dry_run``) every such run directly under ``run_root``."""
    try:
        entries = sorted(os.scandir(run_root), key=lambda e: e.name)
    except OSError:
        return []
    found: list[ContainerlessRun] = []
    for entry in entries:
        if entry.name.startswith(".") or entry.name == OUTCOME_DIR or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            md = read_metadata(Path(entry.path))
            if md.status.is_terminal or md.run_id in known_runs or (md.container_id or "") in known_containers:
                continue
            host, pid, start = _owner(md)
            if host is None or process_alive(host, pid, start) is not False:
                continue  # its owner lives (or is on another host, or unknown): not ours to end
            detail = (
                "its supervisor died before the run got a container"
                if md.status == RunStatus.INITIALIZED or not md.container_id
                else "its supervisor died and its container is gone"
            )
            if not dry_run:
                ctx = RunContext.open_existing(entry.path)
                ctx.record(status=RunStatus.ABANDONED, reason=RunReason.SUPERVISOR_LOST, error=detail)
            found.append(ContainerlessRun(md.run_id, Path(entry.path), md.status.value, f"{host}:{pid}", detail))
        except Exception as exc:
            log.warning("skipped a run dir while looking for orphans", run_dir=entry.path, error=str(exc))
    return found
