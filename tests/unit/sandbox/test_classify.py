"""The final status from container state."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dad_sandbox.run import RunStatus
from dad_sandbox.sandbox._classify import classify
from dad_sandbox.sandbox.engine import ContainerState


def state(code: int | None, oom: bool = False, running: bool = False) -> ContainerState:
    return ContainerState(id="c", status="running" if running else "exited", running=running, exit_code=code,
                          oom_killed=oom, started_at=datetime.now(UTC))


def test_a_container_that_never_started_is_never_completed() -> None:
    """Created but never started (exit code 0, no start time): crashed, engine_error - not completed."""
    never = ContainerState(id="c", status="created", running=False, exit_code=0, oom_killed=False)
    assert classify(never) == (RunStatus.CRASHED, "engine_error")
    assert classify(never, cancelled=True) == (RunStatus.CANCELLED, "cancelled")


@pytest.mark.parametrize(
    ("st", "kwargs", "expected"),
    [
        (state(0), {}, (RunStatus.COMPLETED, None)),
        (state(1), {}, (RunStatus.FAILED, "exit_code")),
        (state(2), {}, (RunStatus.FAILED, "exit_code")),
        (state(137, oom=True), {}, (RunStatus.OOM_KILLED, "oom")),
        (state(0, oom=True), {}, (RunStatus.OOM_KILLED, "oom:child")),
        (state(139), {}, (RunStatus.CRASHED, "signal:SIGSEGV")),
        (state(137), {}, (RunStatus.CRASHED, "signal:SIGKILL")),
        (state(137), {"deadline_hit": True}, (RunStatus.TIMED_OUT, "deadline")),
        (state(137, oom=True), {"cancelled": True}, (RunStatus.CANCELLED, "cancelled")),
        (None, {}, (RunStatus.CRASHED, "engine_lost")),
        (state(None, running=True), {}, (RunStatus.CRASHED, "engine_lost")),
    ],
)
def test_classify(st: ContainerState | None, kwargs: dict[str, bool], expected: tuple[RunStatus, str | None]) -> None:
    """Each engine state maps to one status and reason."""
    assert classify(st, **kwargs) == expected
