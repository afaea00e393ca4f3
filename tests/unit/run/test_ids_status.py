"""Run ids and the status rule."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from dad_sandbox.errors import RunSetupError
from dad_sandbox.run import RunStatus, combine_status, is_valid_run_id, new_run_id


def test_run_id_shape_without_prefix() -> None:
    """A plain run id is run_<YYYYmmdd_HHMMSS>_<6 hex>."""
    rid = new_run_id(now=datetime(2026, 11, 27, 10, 15, 0, tzinfo=UTC))
    assert re.fullmatch(r"run_20261127_101500_[0-9a-f]{6}", rid)
    assert is_valid_run_id(rid)


def test_run_id_prefix_and_rerun() -> None:
    """A prefix goes in front and re-runs start with rerun_."""
    assert new_run_id("test").startswith("test_run_")
    assert new_run_id("x", rerun=True).startswith("x_rerun_")
    assert new_run_id(rerun=True).startswith("rerun_")


@pytest.mark.parametrize("prefix", ["", "../up", "a/b", "with space", "-lead", "x" * 65])
def test_run_id_prefix_rejected(prefix: str) -> None:
    """A prefix that could escape or mangle the run directory name is refused."""
    with pytest.raises(RunSetupError, match="prefix"):
        new_run_id(prefix)


def test_run_ids_are_unique() -> None:
    """Two ids made in the same second differ."""
    assert len({new_run_id() for _ in range(200)}) == 200


def test_first_terminal_status_wins() -> None:
    """Once terminal, a status never changes; running never goes back to initialized."""
    assert combine_status(RunStatus.TIMED_OUT, RunStatus.COMPLETED) is RunStatus.TIMED_OUT
    assert combine_status(RunStatus.RUNNING, RunStatus.FAILED) is RunStatus.FAILED
    assert combine_status(RunStatus.INITIALIZED, RunStatus.RUNNING) is RunStatus.RUNNING
    assert combine_status(RunStatus.RUNNING, RunStatus.INITIALIZED) is RunStatus.RUNNING


def test_terminal_set() -> None:
    """Exactly the seven end states of DESIGN.md are terminal."""
    terminal = {s.value for s in RunStatus if s.is_terminal}
    assert terminal == {"completed", "failed", "timed_out", "oom_killed", "cancelled", "crashed", "abandoned"}
