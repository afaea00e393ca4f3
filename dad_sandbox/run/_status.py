"""The status vocabulary of a run and the one rule for combining statuses.

Why a rule in one place: the supervisor writes the terminal status it observed from the engine,
and user code may later call ``complete_run()``. The first terminal status wins, so a run the
supervisor saw time out can never be turned into ``completed`` by a later call.
"""

from __future__ import annotations

from enum import StrEnum


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
