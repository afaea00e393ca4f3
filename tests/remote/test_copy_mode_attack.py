"""Adversarial copy-mode runs on the second engine: what a run can do to its own copy-out."""

from __future__ import annotations

from pathlib import Path

import pytest

from dad_sandbox import RunStatus
from dad_sandbox.run import read_metadata
from tests.remote.test_copy_mode import recovered, run_cmd

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


def test_a_supervisor_killed_during_the_copy_out_is_recovered_without_false_tampering(
    remote_url: str, project: Path
) -> None:
    """SIGKILL the supervisor while the run dir is coming back: recovery copies it again, whole, honestly.

    The first copy leaves part of the run dir (and the run's symlink) on the host; the next
    supervisor copies over it. The run's own link must not be reported as tampering, the file
    must be whole, and no container or volume is left on the engine (the autouse fixture).
    """
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.remote.test_copy_mode import SUPERVISOR

    size = 250 << 20  # under the policy's max_file_size (256 MiB)
    runs = project / "runs"
    env = {**os.environ, "DOCKER_HOST": remote_url}
    script = f"ln -s big a-link; head -c {size} /dev/zero > big"
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(project), script],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir, partial = None, None
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and partial is None and proc.poll() is None:
            for d in runs.iterdir() if runs.is_dir() else []:
                big = d / "big"
                if big.exists() and 0 < big.stat().st_size < size and not read_metadata(d).status.is_terminal:
                    run_dir, partial = d, big.stat().st_size
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    if partial is None:
        pytest.skip("the copy-out finished before it could be interrupted (machine too fast for this window)")
    assert run_dir is not None and os.readlink(run_dir / "a-link") == "big"  # tar order: before big

    found = recovered(remote_url, project, run_dir)
    assert [o.status for o in found] == ["completed"], found
    md = read_metadata(run_dir)
    assert (run_dir / "big").stat().st_size == size
    assert not [t for t in md.tampering if "copy-out" in t], md.tampering
