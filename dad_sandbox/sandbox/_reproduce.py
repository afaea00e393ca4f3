"""What a re-run or a replay runs with: the previous run's effective policy and image id by default.

Why: a re-run continues a run, and a replay repeats one; both are only meaningful under the same
limits and the same image. The recorded policy (``dad_metadata.json``, the copy the host wrote
beside it) and the image **id** the container ran from are the truth, not today's policy file or
tag. ``--policy``/``--image``/``--timeout`` override, and every choice is said in a note that the
CLI prints and the new run's metadata keeps (``reproduction``).

Pure code (no engine calls); :func:`check_image_present` is the one async check before launch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dad_sandbox.errors import ImageNotFound, PolicyError, RerunTargetError
from dad_sandbox.run import RunMetadata
from dad_sandbox.sandbox._policy import Policy, load_policy
from dad_sandbox.sandbox.engine import Engine

#: What an in-process run records in place of isolation fields.
IN_PROCESS = "in-process"


@dataclass(frozen=True, slots=True)
class Reproduction:
    """The policy a re-run or replay will use, and a note per decision (for the user and the metadata)."""

    policy: Policy
    notes: list[str] = field(default_factory=list)
    pinned_image_id: str | None = None
    previous_run_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"of": self.previous_run_id, "policy": self.policy.name, "policy_hash": self.policy.hash,
                "image": self.policy.image_ref, "notes": self.notes}


def recorded_policy(md: RunMetadata) -> Policy | None:
    """The effective policy a run ran under, as the host recorded it; None for in-process runs.

    Raises:
        PolicyError: a policy is recorded but no longer validates (e.g. written by another version).
    """
    if not md.policy:
        return None
    try:
        return Policy.model_validate(md.policy)
    except ValidationError as exc:
        raise PolicyError(
            f"the policy recorded in run {md.run_id} no longer validates ({exc.error_count()} problem(s)); "
            "pass --policy NAME to choose one"
        ) from exc


def plan(
    md: RunMetadata,
    *,
    policy: str | Path | Policy | None = None,
    image: str | None = None,
    timeout: float | None = None,
) -> Reproduction:
    """The policy for a re-run or replay of the run described by ``md``.

    Raises:
        PolicyError: ``policy`` is not a valid policy, or the recorded one no longer validates.
    """
    notes: list[str] = []
    previous = recorded_policy(md)
    before = f"{md.policy_name or IN_PROCESS}"
    if policy is not None:
        chosen = load_policy(policy)
        notes.append(f"policy {chosen.name!r} from --policy (run {md.run_id} used {before!r})")
    elif previous is not None:
        chosen = previous
        notes.append(f"policy {chosen.name!r} as recorded in run {md.run_id} (hash {chosen.hash[:12]})")
    else:
        chosen = load_policy("untrusted")
        notes.append(f"policy 'untrusted': run {md.run_id} ran {before} and recorded no policy (use --policy)")
    pinned = None
    if image is not None:
        chosen = chosen.with_overrides(image=image)
        notes.append(f"image {image!r} from --image (run {md.run_id} used {md.image_id or md.image or 'none'})")
    elif md.image_id:
        pinned = md.image_id
        chosen = chosen.with_overrides(image=md.image_id)
        notes.append(f"image {md.image_id[:19]} as recorded in run {md.run_id} ({md.image})")
    else:
        notes.append(f"image {chosen.image_ref!r} by name: run {md.run_id} recorded no image id")
    if timeout is not None:
        chosen = chosen.with_overrides(timeout=timeout)
        notes.append(f"timeout {timeout:g}s from --timeout")
    return Reproduction(chosen, notes, pinned, md.run_id)


async def check_image_present(engine: Engine, reproduction: Reproduction) -> None:
    """Refuse clearly, before any container, when the recorded image id is gone from the engine.

    Raises:
        ImageNotFound: the pinned image id is no longer on the engine.
    """
    if reproduction.pinned_image_id is None:
        return
    try:
        await engine.image_id(reproduction.pinned_image_id)
    except ImageNotFound as exc:
        raise ImageNotFound(
            f"image {reproduction.pinned_image_id} that run {reproduction.previous_run_id} ran from is no longer on "
            "this engine; pass --image NAME (e.g. dad-sandbox-runner:<version>) to run with another image"
        ) from exc


def previous_run(run_root: Path, run_id: str) -> tuple[Path, RunMetadata]:
    """The run dir and metadata of a run to re-run or replay.

    Raises:
        RerunTargetError: no such run, or its metadata cannot be read.
    """
    from dad_sandbox.errors import RunError
    from dad_sandbox.run import find_run, read_metadata

    try:
        run_dir = find_run(run_root, run_id)
        return run_dir, read_metadata(run_dir)
    except RerunTargetError:
        raise
    except RunError as exc:
        raise RerunTargetError(str(exc)) from exc
