"""Copy mode without an engine: what goes into each volume, and how the container mounts them."""

from __future__ import annotations

import dataclasses
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from dad_sandbox.errors import PolicyError, RunSetupError
from dad_sandbox.run import RunContext
from dad_sandbox.sandbox import _remote_rundir
from dad_sandbox.sandbox._engine_view import TRANSFER_ENV, forced_mode
from dad_sandbox.sandbox._ownership import RunUser
from dad_sandbox.sandbox._policy import load_policy
from dad_sandbox.sandbox._remote_rundir import RemoteRunDir, _pack, volume_name
from dad_sandbox.sandbox._spec import build_spec
from dad_sandbox.sandbox.engine import Mount
from dad_sandbox.testing import FakeEngine

USER = RunUser(uid=1234, gid=1234, host_uid=0, host_gid=0)


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    project = tmp_path / "project"
    project.mkdir()
    (project / "code.py").write_text("x = 1\n")
    context = RunContext("exec", project)  # run root inside the project: <project>/runs
    context.setup_run()
    return context


def _members(plan: RemoteRunDir, role: str) -> dict[str, tarfile.TarInfo]:
    buf = io.BytesIO()
    _pack(plan.sources[role], buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_volume_spec_swaps_every_bind_mount_for_a_volume(ctx: RunContext) -> None:
    """The container mounts the run's volumes where the host folders would be, with the same modes."""
    plan = RemoteRunDir.for_run(FakeEngine(), ctx, USER)
    spec = plan.volume_spec(build_spec(ctx, load_policy("untrusted"), USER, ["true"], deadline=0.0))
    by_target = {m.target: m for m in spec.mounts}
    assert all(m.kind == "volume" for m in spec.mounts)
    assert by_target["/dad/runs"] == Mount(volume_name(ctx.run_id, "run"), "/dad/runs", False, "volume")
    assert by_target[f"/dad/runs/{ctx.run_id}/static_inputs"].read_only
    assert by_target["/dad/project"].read_only
    assert f"/dad/runs/{ctx.run_id}/.trace" in spec.tmpfs  # the mask is unchanged


def test_a_mount_copy_mode_cannot_carry_is_refused(ctx: RunContext) -> None:
    """An egress socket folder (or any other host folder) cannot reach a remote engine: a clear error."""
    plan = RemoteRunDir.for_run(FakeEngine(), ctx, USER)
    spec = build_spec(ctx, load_policy("untrusted"), USER, ["true"], deadline=0.0)
    spec = dataclasses.replace(spec, mounts=(*spec.mounts, Mount("/run/egress", "/dad/egress")))
    with pytest.raises(RunSetupError, match="allowlist"):
        plan.volume_spec(spec)


def test_run_volume_is_the_run_users_with_hollow_masks(ctx: RunContext) -> None:
    """The run dir is packed under its own name, owned by the run user; .trace and static_inputs are
    empty root-owned mount points (the host's metadata never leaves the host)."""
    members = _members(RemoteRunDir.for_run(FakeEngine(), ctx, USER), "run")
    top = members[ctx.run_id]
    assert (top.uid, top.gid, top.mode) == (1234, 1234, 0o755)
    trace = members[f"{ctx.run_id}/.trace"]
    assert (trace.uid, trace.mode) == (0, 0o555)
    assert not [n for n in members if n.startswith(f"{ctx.run_id}/.trace/")]
    assert not [n for n in members if n.startswith(f"{ctx.run_id}/static_inputs/")]


def test_project_leaves_out_the_run_root(ctx: RunContext) -> None:
    """The run root inside the project is an empty folder in the project volume (other runs stay home)."""
    members = _members(RemoteRunDir.for_run(FakeEngine(), ctx, USER), "project")
    assert "code.py" in members and members["runs"].isdir()
    assert not [n for n in members if n.startswith("runs/")]


def test_previous_run_is_packed_read_only_without_following_anything(ctx: RunContext, tmp_path: Path) -> None:
    """A previous run dir (written by a run) goes in read-only: links as links, FIFOs left out, no setuid."""
    prev = tmp_path / "prev"
    (prev / "node").mkdir(parents=True)
    (prev / "node" / "result.json").write_text("{}")
    (prev / "suid").write_text("x")
    (prev / "suid").chmod(0o4755)
    (prev / "link").symlink_to("/etc/passwd")
    os.mkfifo(prev / "fifo")
    source = _remote_rundir._Source("previous", prev, (0, 0), True)
    buf = io.BytesIO()
    _pack(source, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["link"].issym() and members["link"].linkname == "/etc/passwd"
    assert "fifo" not in members
    assert members["suid"].mode == 0o555 and not members["suid"].mode & stat.S_ISUID
    assert members["node/result.json"].mode == 0o444 and members["node"].mode == 0o555


def test_a_project_too_big_to_copy_is_refused(ctx: RunContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the copy limit the run is refused with a message saying what to do."""
    monkeypatch.setattr(_remote_rundir, "MAX_PROJECT_BYTES", 3)
    plan = RemoteRunDir.for_run(FakeEngine(), ctx, USER)
    with pytest.raises(RunSetupError, match="smaller project root"):
        _pack(plan.sources["project"], io.BytesIO())


def test_forced_mode_is_read_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """DAD_SANDBOX_RUN_DIR_TRANSFER: auto (probe), bind, copy; anything else is a clear error."""
    monkeypatch.delenv(TRANSFER_ENV, raising=False)
    assert forced_mode() is None
    monkeypatch.setenv(TRANSFER_ENV, "Copy")
    assert forced_mode() == "copy"
    monkeypatch.setenv(TRANSFER_ENV, "nfs")
    with pytest.raises(PolicyError, match="auto"):
        forced_mode()


@pytest.mark.parametrize(
    ("limit", "breach"),
    [(None, None), ("disk_quota", "disk_quota"), ("file_quota", "file_quota"), ("budget", "disk_quota"),
     ("malformed", "engine_error")],
)
def test_a_copy_cut_short_decides_the_status(limit: str | None, breach: str | None) -> None:
    """Quota and file limits fail the run as locally; no time to copy fails closed; a broken copy is the engine's."""
    from dad_sandbox.run._tar_extract import Extracted
    from dad_sandbox.sandbox._container_run import ContainerRun, _Files

    copied = Extracted()
    copied.refuse(b"run/\x1b[2Jx", "a FIFO")
    if limit is not None:
        copied.stop(limit, "why")
    files = _Files()
    ContainerRun._note_copy_out(copied, files, [])
    assert (files.copy_breach[0] if files.copy_breach else None) == breach
    assert files.tampering == ["copy-out refused run/\\x1b[2Jx: a FIFO"]


class _Sink:
    """An archive destination that counts what is written and gives up past a bound (the test's, not the code's)."""

    def __init__(self, bound: int) -> None:
        self.written, self.bound = 0, bound

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self.written > self.bound:
            raise AssertionError(f"packed more than {self.bound} bytes")
        return len(data)

    def tell(self) -> int:
        return self.written


def test_a_sparse_file_in_the_previous_run_cannot_fill_the_hosts_disk(ctx: RunContext) -> None:
    """A re-run in copy mode packs the previous run dir, which a run wrote: it is bounded, before reading.

    A bind-mode run counts disk blocks against its quota, so it can leave a sparse file of a
    terabyte that costs nothing. Packing it for a re-run on an engine that does not see this host
    read all of it into a temporary file on the host: the previous run source had no byte cap,
    and the project's cap was checked only after a file had been packed whole.
    """
    with open(ctx.run_dir / "big", "wb") as handle:
        handle.truncate(64 << 30)  # 64 GiB, no block allocated
    rerun = RunContext("exec", ctx.project_root, previous_run_id=ctx.run_id)
    rerun.setup_run()
    plan = RemoteRunDir.for_run(FakeEngine(), rerun, USER)
    with pytest.raises(RunSetupError, match="previous"):
        _pack(plan.sources["previous"], _Sink(8 << 20))  # type: ignore[arg-type]
    (ctx.project_root / "sparse").write_bytes(b"")
    os.truncate(ctx.project_root / "sparse", 64 << 30)
    with pytest.raises(RunSetupError, match="smaller project root"):
        _pack(plan.sources["project"], _Sink(8 << 20))  # type: ignore[arg-type]
