"""The status vocabulary of a run, the reasons a run ends, and the one rule for combining statuses.

Why a rule in one place: the supervisor writes the terminal status it observed from the engine,
and user code may later call ``complete_run()``. The first terminal status wins, so a run the
supervisor saw time out can never be turned into ``completed`` by a later call.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import NewType


class RunStatus(StrEnum):
    """Where a run is in its life; the last seven are terminal."""

    INITIALIZED = "initialized"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    OOM_KILLED = "oom_killed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"
    ABANDONED = "abandoned"

    @property
    def is_terminal(self) -> bool:
        """True for a status a run ends in."""
        return self not in (RunStatus.INITIALIZED, RunStatus.RUNNING)


TERMINAL_STATUSES: frozenset[RunStatus] = frozenset(s for s in RunStatus if s.is_terminal)


class RunReason(StrEnum):
    """Why a run ended as it did: ``dad_metadata.json``'s ``reason`` (contract; README, "Statuses").

    These are the fixed reasons. One family is open-ended and not a member: a process that died of
    a signal we did not send is ``crashed`` with reason ``signal:<NAME>`` (``signal:SIGSEGV``, or
    ``signal:SIG<n>`` for a number with no name), built by :func:`signal_reason`. The exit code
    itself is never part of a reason: it is the metadata's ``exit_code``.
    """

    # failed
    EXIT_CODE = "exit_code"  # non-zero exit code
    PREFLIGHT = "preflight"  # policy, inputs or engine failed before any container existed
    INVALID_REQUEST = "invalid_request"  # refused before any container: the request cannot run
    NODE_FAILED = "node_failed"  # a node raised
    COMPONENT_LOAD = "component_load"  # the component could not be imported (in the container)
    COMPONENT_ERROR = "component_error"  # the component failed outside any node
    RUNNER_REPORT = "runner_report"  # exit 0 without a completed runner report
    INVALID_INPUTS = "invalid_inputs"  # a static input does not fit its node (nothing ran)
    RERUN_TARGET = "rerun_target"  # the re-run start path or a part to load is missing
    IMAGE_MISSING = "image_missing"  # a re-run's or replay's recorded image is gone
    DISK_QUOTA = "disk_quota"  # the run dir went over (or could not be measured against) its quota
    FILE_QUOTA = "file_quota"  # the run dir held more entries than max_files
    # timed_out
    DEADLINE = "deadline"
    # oom_killed
    OOM = "oom"  # the container's PID 1 was OOM-killed
    OOM_CHILD = "oom:child"  # only a child was; PID 1 exited 0
    # cancelled
    CANCELLED = "cancelled"  # the caller cancelled, or a signal to the supervising process
    # crashed (and signal:SIG<name>, see signal_reason)
    INTERRUPTED = "interrupted"  # an in-process run ended by SystemExit or another BaseException
    ENGINE_LOST = "engine_lost"  # the engine went away during the run
    ENGINE_ERROR = "engine_error"  # the engine refused to create or start the container
    NODE_LOST = "node_lost"  # the Swarm node that ran it went down (the engine watches node state)
    # abandoned
    SUPERVISOR_LOST = "supervisor_lost"  # its supervisor died and the run could not be recovered


#: A ``signal:SIG<name or number>`` reason; only :func:`signal_reason` makes one.
SignalReason = NewType("SignalReason", str)
#: What a run's ``reason`` may be (``None``: completed).
Reason = RunReason | SignalReason

SIGNAL_REASON_PREFIX = "signal:"
_FIXED_REASONS = frozenset(r.value for r in RunReason)
_SIGNAL_REASON = re.compile(r"signal:SIG[A-Z0-9]{1,16}")


def signal_reason(name: str) -> SignalReason:
    """The reason of a run whose process died of signal ``name`` (``"SIGSEGV"``, ``"SIG70"``)."""
    reason = f"{SIGNAL_REASON_PREFIX}{name}"
    if not _SIGNAL_REASON.fullmatch(reason):
        raise ValueError(f"not a signal name: {name!r}")
    return SignalReason(reason)


def is_known_reason(value: str) -> bool:
    """True for a fixed reason or a ``signal:SIG...`` one (what tools reading metadata may expect)."""
    return value in _FIXED_REASONS or _SIGNAL_REASON.fullmatch(value) is not None


def combine_status(current: RunStatus, requested: RunStatus) -> RunStatus:
    """Return the status a run has after ``requested`` is applied to ``current``.

    A terminal status is final: the first one written wins. A non-terminal status only moves
    forward (``initialized`` -> ``running``).
    """
    if current.is_terminal:
        return current
    if requested == RunStatus.INITIALIZED and current == RunStatus.RUNNING:
        return current
    return requested
