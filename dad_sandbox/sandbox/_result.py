"""``RunResult``: what ``IsolatedExecution.run()``/``run_command()`` return."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from dad_sandbox import errors
from dad_sandbox.run import RunMetadata, RunStatus

_OUTCOME_ERRORS: dict[RunStatus, type[errors.RunOutcomeError]] = {
    RunStatus.FAILED: errors.RunFailed,
    RunStatus.TIMED_OUT: errors.RunTimedOut,
    RunStatus.OOM_KILLED: errors.RunOOMKilled,
    RunStatus.CANCELLED: errors.RunCancelled,
    RunStatus.CRASHED: errors.RunCrashed,
    RunStatus.ABANDONED: errors.RunAbandoned,
}


class RunResult(BaseModel):
    """How one isolated run ended. A failed component is a status here, not an exception."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    status: RunStatus
    reason: str | None = None
    exit_code: int | None = None
    duration_seconds: float | None = None
    run_dir: Path
    error: str | None = None
    nodes: list[dict[str, Any]] = []
    metadata: RunMetadata

    @classmethod
    def from_metadata(cls, md: RunMetadata, run_dir: Path, nodes: list[dict[str, Any]] | None = None) -> RunResult:
        """The result as the host recorded it in the run's metadata."""
        return cls(
            run_id=md.run_id,
            status=md.status,
            reason=md.reason,
            exit_code=md.exit_code,
            duration_seconds=md.duration_seconds,
            run_dir=run_dir,
            error=md.error,
            nodes=nodes or [],
            metadata=md,
        )

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.COMPLETED

    def raise_for_status(self) -> RunResult:
        """Return self if completed; otherwise raise the :class:`RunOutcomeError` for the status."""
        if self.ok:
            return self
        cls = _OUTCOME_ERRORS.get(self.status, errors.RunOutcomeError)
        detail = f" ({self.reason})" if self.reason else ""
        first = (self.error or "").strip().splitlines()[:1]
        msg = f"run {self.run_id} ended {self.status.value}{detail}" + (f": {first[0]}" if first else "")
        raise cls(msg, run_id=self.run_id, status=self.status.value, reason=self.reason)

    def summary(self) -> dict[str, Any]:
        """The flat JSON the CLI prints with ``--json``."""
        return {
            "run_id": self.run_id,
            "status": self.status.value,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "run_dir": str(self.run_dir),
            "duration_seconds": self.duration_seconds,
            "error": self.error,
            "nodes": self.nodes,
        }
