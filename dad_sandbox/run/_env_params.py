"""``RunEnvParams``: the five paths that describe one run, as in the DAD docs."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class RunEnvParams(BaseModel):
    """Where one run lives. Passed into the container (with container-side paths) to rebuild it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    run_dir: Path
    run_root: Path
    trace_dir: Path
    outcome_repo_dir: Path
