"""The final status of a run from what the engine says: one pure function, tested without Docker.

Decisions (README, "Statuses"):

* cancelled by the caller wins over everything: the user asked for it.
* our deadline kill -> ``timed_out`` (reason ``deadline``), whatever exit code the kill produced.
* ``OOMKilled`` -> ``oom_killed``. Docker also sets it when only a child was OOM-killed and PID 1
  went on to exit 0; that run still hit its memory limit and lost work, so it is ``oom_killed`` with
  reason ``oom:child`` rather than a clean ``completed``.
* exit code > 128 that we did not cause -> ``crashed`` with ``signal:SIGxxx``.
* other non-zero exit -> ``failed``; 0 -> ``completed``.
"""

from __future__ import annotations

import signal

from dad_sandbox.run import RunStatus
from dad_sandbox.sandbox.engine import ContainerState


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def classify(
    state: ContainerState | None,
    *,
    deadline_hit: bool = False,
    cancelled: bool = False,
) -> tuple[RunStatus, str | None]:
    """``(status, reason)`` for a finished container."""
    if cancelled:
        return RunStatus.CANCELLED, "cancelled"
    if deadline_hit:
        return RunStatus.TIMED_OUT, "deadline"
    if state is None:
        return RunStatus.CRASHED, "engine_lost"
    if state.oom_killed:
        return RunStatus.OOM_KILLED, "oom:child" if state.exit_code == 0 else "oom"
    code = state.exit_code
    if code is None or state.running:
        return RunStatus.CRASHED, "engine_lost"
    if code == 0:
        return RunStatus.COMPLETED, None
    if 128 < code < 128 + 65:
        return RunStatus.CRASHED, f"signal:{signal_name(code - 128)}"
    return RunStatus.FAILED, "exit_code"
