"""Adversarial copy-mode runs on the second engine: what a run can do to its own copy-out."""

from __future__ import annotations

from pathlib import Path

import pytest

from dad_sandbox import RunStatus
from dad_sandbox.run import read_metadata
from tests.remote.test_copy_mode import run_cmd

pytestmark = pytest.mark.slow


def test_odd_names_and_shapes_come_back_like_a_local_run(remote_url: str, project: Path) -> None:
    """Names that are not UTF-8, very long ones, deep trees, empty and unreadable files."""
    script = (
        "printf a > \"$(printf 'lat\\377in')\"; "
        "n=$(printf '%0200d' 0); mkdir -p \"$n/$n/$n/$n/$n/$n/$n/$n/$n/$n/$n/$n/$n/$n/$n\" && printf d > \"$n/$n/$n/$n/$n/$n/$n/$n/$n/$n/$n/$n/$n/$n/$n/deep\"; "
        ": > empty; printf s > secret && chmod 000 secret; mkdir locked && printf l > locked/in && chmod 000 locked; "
        "printf z > zz-last; true"
    )
    ctx, result = run_cmd(remote_url, project, script)
    md = read_metadata(ctx.run_dir)
    assert result.status == RunStatus.COMPLETED, (result.error, md.run_dir_copy)
    assert (ctx.run_dir / "zz-last").read_text() == "z"
    assert (ctx.run_dir / "empty").stat().st_size == 0
    assert (ctx.run_dir / "secret").read_text() == "s"
    assert (ctx.run_dir / "locked" / "in").read_text() == "l"
    assert (ctx.run_dir / "lat\udcffin").read_text() == "a"
    assert (ctx.run_dir.joinpath(*["0" * 200] * 15) / "deep").read_text() == "d"  # a 3 KiB path
