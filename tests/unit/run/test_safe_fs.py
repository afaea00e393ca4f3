"""The host's file access in run dirs refuses links, FIFOs and oversized files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dad_sandbox.errors import UnsafePathError
from dad_sandbox.run import RunContext, _safe_fs, read_metadata


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    (tmp_path / "proj").mkdir()
    c = RunContext("a", tmp_path / "proj")
    c.setup_run()
    return c


def test_metadata_symlink_is_replaced_not_followed(ctx: RunContext, tmp_path: Path) -> None:
    """A link planted at dad_metadata.json is replaced; the host file it points to is untouched."""
    sentinel = tmp_path / "host_secret.txt"
    sentinel.write_text("keep me")
    md_path = ctx.trace_dir / "dad_metadata.json"
    md_path.unlink()
    md_path.symlink_to(sentinel)
    ctx.complete_run("completed")
    assert sentinel.read_text() == "keep me"
    assert not md_path.is_symlink()
    assert read_metadata(ctx.run_dir).status == "completed"


def test_trace_dir_symlink_is_moved_aside_not_followed(ctx: RunContext, tmp_path: Path) -> None:
    """A .trace replaced by a link to a host dir is moved aside; nothing is written through it."""
    host_dir = tmp_path / "host_dir"
    host_dir.mkdir()
    trace = ctx.trace_dir
    for f in trace.iterdir():
        f.unlink()
    trace.rmdir()
    trace.symlink_to(host_dir)
    ctx.complete_run("completed")
    assert list(host_dir.iterdir()) == []
    assert trace.is_dir() and not trace.is_symlink()
    md = read_metadata(ctx.run_dir)
    assert md.status == "completed" and md.tampering and "moved it aside" in md.tampering[0]


def test_safe_open_refuses_symlinked_dir(tmp_path: Path) -> None:
    """open_dir refuses a symlinked component instead of following it."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafePathError):
        _safe_fs.open_dir(tmp_path, "link")


def test_read_bounded_refuses_fifo_without_blocking(tmp_path: Path) -> None:
    """A FIFO where a file should be is refused at once (no blocking open)."""
    os.mkfifo(tmp_path / "pipe")
    with _safe_fs.opened_dir(tmp_path) as fd, pytest.raises(UnsafePathError, match="FIFO"):
        _safe_fs.read_bounded(fd, "pipe", 100)


def test_read_bounded_caps_size(tmp_path: Path) -> None:
    """A large file is read only up to the limit and flagged as truncated."""
    (tmp_path / "big").write_bytes(b"x" * 10_000)
    with _safe_fs.opened_dir(tmp_path) as fd:
        data, truncated = _safe_fs.read_bounded(fd, "big", 100)
    assert len(data) == 100 and truncated


def test_read_bounded_refuses_symlink(tmp_path: Path) -> None:
    """A symlink is never followed for reading."""
    (tmp_path / "real").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with _safe_fs.opened_dir(tmp_path) as fd, pytest.raises(UnsafePathError, match="symlink"):
        _safe_fs.read_bounded(fd, "link", 100)


@pytest.mark.parametrize("name", ["../x", "a/../../b", "/etc/passwd"])
def test_paths_that_leave_are_refused(tmp_path: Path, name: str) -> None:
    """Names with '..' or absolute paths are refused."""
    with pytest.raises(UnsafePathError):
        _safe_fs.open_dir(tmp_path, name)


def test_lchown_tree_does_not_follow_links(tmp_path: Path) -> None:
    """Handing a tree back changes the link itself, never its target outside the tree."""
    outside = tmp_path / "outside"
    outside.write_text("x")
    before = outside.stat()
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "link").symlink_to(outside)
    (tree / "f").write_text("y")
    _safe_fs.lchown_tree(tree, os.getuid(), os.getgid())
    after = outside.stat()
    assert (before.st_uid, before.st_gid, before.st_mode) == (after.st_uid, after.st_gid, after.st_mode)
