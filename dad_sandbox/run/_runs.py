"""Finding and reading runs under a run root, for the CLI and tools (host side, read-only).

Run dirs were written by untrusted code, so every read goes through the bounded, link-refusing
helpers, and one unreadable run never stops a listing.
"""

from __future__ import annotations

from pathlib import Path

from dad_sandbox.errors import RunError
from dad_sandbox.run._ids import is_valid_run_id
from dad_sandbox.run._metadata import RunMetadata, read_metadata


def find_run(run_root: Path, run_id: str) -> Path:
    """The directory of ``run_id`` under ``run_root``.

    Raises:
        RunError: not a run id, or no such run (the message lists the newest ones).
    """
    if not is_valid_run_id(run_id):
        raise RunError(f"{run_id!r} is not a run id (e.g. run_20261127_101500_a1b2c3)")
    path = run_root / run_id
    if not path.is_dir() or path.is_symlink():
        recent = [m.run_id for m in list_runs(run_root)[:5]]
        hint = f"; recent runs: {', '.join(recent)}" if recent else f"; no runs under {run_root}"
        raise RunError(f"no run {run_id} under {run_root}{hint}")
    return path


def list_runs(run_root: Path) -> list[RunMetadata]:
    """Metadata of every readable run under ``run_root``, newest first."""
    if not run_root.is_dir():
        return []
    out = []
    for entry in run_root.iterdir():
        if not is_valid_run_id(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            out.append(read_metadata(entry))
        except (RunError, OSError):
            continue
    return sorted(out, key=lambda m: m.created_at, reverse=True)
