"""The final status of a run from what the engine says: one pure function, tested without Docker.

Decisions (README, "Statuses"):

* cancelled by the caller wins over everything: the user asked for it.
* our deadline kill -> ``timed_out`` (reason ``deadline``), whatever exit code the kill produced.
* ``OOMKilled`` -> ``oom_killed``. Docker also sets it when only a child was OOM-killed and PID 1
  went on to exit 0; that run still hit its memory limit and lost work, so it is ``oom_killed`` with
  reason ``oom:child`` rather than a clean ``completed``.
* a limit the supervisor enforced (``disk_quota``) -> ``failed`` with that reason; a process killed
  by SIGXFSZ hit the policy's ``max_file_size`` -> ``failed``, ``disk_quota``.
* the engine went away mid-run -> ``crashed``, ``engine_lost``.
* the run's Swarm node left the cluster mid-run -> ``crashed``, ``node_lost`` (its task would keep
  saying "running" until the node returns; the Swarm engine watches the node's state instead).
* the container was created but never ran (its start failed, whatever path reported it: start,
  attach or wait) -> ``crashed``, ``engine_error``. Its exit code is 0 there, and must never read
  as ``completed``.
* exit code > 128 that we did not cause -> ``crashed`` with ``signal:SIGxxx``.
* other non-zero exit -> ``failed``; 0 -> ``completed``.
"""

from __future__ import annotations

import signal

from dad_sandbox.run._status import Reason, RunReason, RunStatus, signal_reason
from dad_sandbox.sandbox.engine import NODE_LOST, ContainerState


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
    limit_hit: RunReason | None = None,
    engine_lost: bool = False,
) -> tuple[RunStatus, Reason | None]:
    """``(status, reason)`` for a finished container."""
    if cancelled:
        return RunStatus.CANCELLED, RunReason.CANCELLED
    if deadline_hit:
        return RunStatus.TIMED_OUT, RunReason.DEADLINE
    if limit_hit:
        return RunStatus.FAILED, limit_hit
    if state is None or engine_lost:
        return RunStatus.CRASHED, RunReason.ENGINE_LOST
    if state.status == NODE_LOST:
        return RunStatus.CRASHED, RunReason.NODE_LOST
    if state.oom_killed:
        return RunStatus.OOM_KILLED, RunReason.OOM_CHILD if state.exit_code == 0 else RunReason.OOM
    code = state.exit_code
    if code is None or state.running:
        return RunStatus.CRASHED, RunReason.ENGINE_LOST
    if state.status == "created" or state.started_at is None:
        return RunStatus.CRASHED, RunReason.ENGINE_ERROR
    if code == 0:
        return RunStatus.COMPLETED, None
    if code == 128 + signal.SIGXFSZ:
        return RunStatus.FAILED, RunReason.DISK_QUOTA
    if 128 < code < 128 + 65:
        return RunStatus.CRASHED, signal_reason(signal_name(code - 128))
    return RunStatus.FAILED, RunReason.EXIT_CODE
