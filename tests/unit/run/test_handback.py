"""Hand-back of a run dir: owners, no setuid/setgid/world-writable modes, any depth, never through a link."""

from __future__ import annotations

import functools
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dad_sandbox.run._handback import hand_back_tree
from dad_sandbox.sandbox import _ownership
from dad_sandbox.sandbox._ownership import RunUser
from tests._support import closed_to_others

ROOT_ONLY = pytest.mark.skipif(os.getuid() != 0, reason="needs root to make files of another uid and chown them")


def modes(root: Path) -> Iterator[tuple[str, int]]:
    """(relative path, mode) of every entry, walked fd-relative so that any depth works."""
    def walk(fd: int, prefix: str) -> Iterator[tuple[str, int]]:
        for entry in os.scandir(fd):
            st = entry.stat(follow_symlinks=False)
            yield prefix + entry.name, st.st_mode
            if stat.S_ISDIR(st.st_mode):
                child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                try:
                    yield from walk(child, prefix + entry.name + "/")
                finally:
                    os.close(child)

    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield from walk(fd, "")
    finally:
        os.close(fd)


def bad(mode: int) -> bool:
    return bool(mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH))


def hostile_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A run dir with setuid/setgid/world-writable entries, a locked folder and links out."""
    outside = tmp_path / "outside"
    outside.write_text("host file\n")
    outside.chmod(0o4777)  # the walk must never reach it, even though links point here
    tree = tmp_path / "run"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "suid").write_bytes(b"\x7fELF")
    (tree / "suid").chmod(0o4755)
    (tree / "a" / "sgid").write_text("x")
    (tree / "a" / "sgid").chmod(0o2755)
    (tree / "a" / "b").chmod(0o2777)
    (tree / "a" / "b" / "ww").write_text("x")
    (tree / "a" / "b" / "ww").chmod(0o666)
    os.mkfifo(tree / "a" / "fifo")
    (tree / "a" / "fifo").chmod(0o666)
    (tree / "a" / "link").symlink_to(outside)
    (tree / "a" / "dirlink").symlink_to(tmp_path)
    (tree / "locked").mkdir()
    (tree / "locked" / "inner").write_text("x")
    (tree / "locked" / "inner").chmod(0o6777)
    (tree / "locked").chmod(0o000)
    return tree, outside


def test_strips_setuid_setgid_and_world_write_everywhere(tmp_path: Path) -> None:
    """Every setuid/setgid/world-writable entry loses those bits; locked folders open again; links' targets are untouched."""
    tree, outside = hostile_tree(tmp_path)
    done = hand_back_tree(tree)
    assert done.complete and not done.problems
    got = dict(modes(tree))
    assert not [p for p, m in got.items() if not stat.S_ISLNK(m) and bad(m)], got
    assert stat.S_IMODE(got["locked"]) & 0o700 == 0o700 and "locked/inner" in got
    assert stat.S_IMODE(got["suid"]) == 0o755 and stat.S_IMODE(got["a/b/ww"]) == 0o664
    assert stat.S_IMODE(outside.stat().st_mode) == 0o4777  # the link's target keeps its (bad) mode
    assert done.stripped == 6


@pytest.fixture
def own_tmp() -> Iterator[Path]:
    """A temp folder outside pytest's, removed with rm -rf: pytest's own cleanup recurses and
    would fail on a tree thousands of levels deep (for every later pytest run on the machine)."""
    base = Path(tempfile.mkdtemp(prefix="dad-handback-"))
    try:
        yield base
    finally:
        subprocess.run(["rm", "-rf", "--", str(base)], check=False)


def test_deeper_than_path_max(own_tmp: Path) -> None:
    """A setuid file 3000 folders down (a path of ~9000 characters) is reached and stripped."""
    tree = own_tmp / "run"
    tree.mkdir()
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    depth = 3000
    for _ in range(depth):
        os.mkdir("dd", dir_fd=fd)
        nfd = os.open("dd", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    leaf = os.open("suid", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.fchmod(leaf, 0o6777)
    os.close(leaf)
    os.fchmod(fd, 0o000)  # and the deepest folder locked
    os.close(fd)
    done = hand_back_tree(tree)
    assert done.complete, done.problems
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        nfd = os.open("dd", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        os.close(fd)
        fd = nfd
    try:
        assert stat.S_IMODE(os.stat("suid", dir_fd=fd, follow_symlinks=False).st_mode) == 0o775
    finally:
        os.close(fd)
    assert done.entries == depth + 1


def test_bounded_in_time(tmp_path: Path) -> None:
    """Out of time, the walk stops and says it is incomplete rather than running on."""
    tree, _ = hostile_tree(tmp_path)
    done = hand_back_tree(tree, timeout=0)
    assert not done.complete and "ran out of time" in done.problems[-1]


def test_reclaim_closes_the_run_dir_when_cut_short(tmp_path: Path, monkeypatch) -> None:
    """If the hand-back cannot finish, the run dir is closed to its owner (0700) instead of left open."""
    tree, _ = hostile_tree(tmp_path)
    monkeypatch.setattr(_ownership, "hand_back_tree", functools.partial(hand_back_tree, timeout=0))
    done = _ownership.reclaim(tree, RunUser(os.getuid(), os.getgid(), os.getuid(), os.getgid()))
    assert not done.complete and stat.S_IMODE(tree.stat().st_mode) == 0o700


def test_reclaim_strips_also_when_the_uid_is_shared(tmp_path: Path) -> None:
    """A run that ran as the host's own uid still gets its setuid and world-writable entries stripped."""
    tree, _ = hostile_tree(tmp_path)
    tree.chmod(0o777)
    done = _ownership.reclaim(tree, RunUser(os.getuid(), os.getgid(), os.getuid(), os.getgid()))
    assert done.complete and stat.S_IMODE(tree.stat().st_mode) == 0o755
    assert not [p for p, m in modes(tree) if not stat.S_ISLNK(m) and bad(m)]


@ROOT_ONLY
def test_root_host_gives_everything_back(tmp_path: Path) -> None:
    """As root, every entry (links included, never their targets) goes back to the host uid:gid."""
    tree, outside = hostile_tree(tmp_path)
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), 65534, 65534)
    os.lchown(outside, 12345, 12345)
    done = _ownership.reclaim(tree, RunUser(65534, 65534, 0, 0))
    assert done.complete and done.chowned >= 9
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in (*dirnames, *filenames):
            st = os.lstat(os.path.join(dirpath, name))
            assert (st.st_uid, st.st_gid) == (0, 0), name
    assert (outside.stat().st_uid, outside.stat().st_gid) == (12345, 12345)


@ROOT_ONLY
def test_unprivileged_owner_unlocks_its_folders(own_tmp: Path) -> None:
    """As a non-root host user, folders the run locked with chmod 000 are unlocked through a pinned handle."""
    if (closed := closed_to_others()) is not None:
        pytest.skip(f"{closed} is closed to other users, so uid 65534 cannot run this checkout's python")
    own_tmp.chmod(0o755)  # pytest's own temp root is 0700: uid 65534 could not enter it
    tree, _ = hostile_tree(own_tmp)
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in (*dirnames, *filenames):
            os.lchown(os.path.join(dirpath, name), 65534, 65534)
    os.lchown(tree, 65534, 65534)
    code = ("import sys; from pathlib import Path; from dad_sandbox.run._handback import hand_back_tree\n"
            "d = hand_back_tree(Path(sys.argv[1])); print(d); sys.exit(0 if d.complete and not d.problems else 1)")
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code,
                           str(tree)], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[3],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    if "Permission denied" in done.stderr and "python" in done.stderr.lower() and done.returncode != 1:
        pytest.skip(f"uid 65534 cannot run this checkout's python: {done.stderr[-200:]}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [p for p, m in modes(tree) if not stat.S_ISLNK(m) and bad(m)]


def test_inherited_setgid_on_folders_is_stripped_but_not_counted(tmp_path: Path) -> None:
    """A folder whose only extra bit is setgid (inherited from a setgid parent) is cleaned silently; 2777 still counts."""
    tree = tmp_path / "run"
    (tree / "node").mkdir(parents=True)
    (tree / "node").chmod(0o2755)
    (tree / "open").mkdir()
    (tree / "open").chmod(0o2777)
    done = hand_back_tree(tree)
    assert stat.S_IMODE((tree / "node").stat().st_mode) == 0o755
    assert stat.S_IMODE((tree / "open").stat().st_mode) == 0o775
    assert done.stripped == 1
