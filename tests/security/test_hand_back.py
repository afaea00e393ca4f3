"""Hand-back: what a run leaves in its directory comes back to the host user without setuid, setgid
or world-writable modes, at any depth, and the hand-back never follows a link out of the run dir.

The oracle is GNU ``find`` (fd-relative, any depth), not the code under test.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._harness import Contained, attack, host_sentinels

COMPLETED = {("completed", None)}


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Path]:
    yield host_sentinels(tmp_path)
    # pytest's own temp cleanup recurses and fails on trees thousands of levels deep - for every
    # later pytest run on the machine - so the run dirs of this module are removed here.
    subprocess.run(["rm", "-rf", "--", str(tmp_path / "runs")], check=False)


def find(run_dir: Path, *expr: str) -> list[str]:
    done = subprocess.run(["find", str(run_dir), *expr], capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if line]


def assert_handed_back(got: Contained) -> None:
    """No setuid/setgid/world-writable entry (links aside), every entry owned by the host user."""
    run_dir = got.ctx.run_dir
    bad = find(run_dir, "!", "-type", "l", "-perm", "/6002")
    assert bad == [], f"left with setuid/setgid/world-write bits: {bad[:10]}"
    foreign = find(run_dir, "(", "!", "-user", str(os.getuid()), "-o", "!", "-group", str(os.getgid()), ")")
    assert foreign == [], f"not handed back to {os.getuid()}:{os.getgid()}: {foreign[:10]}"
    locked = find(run_dir, "-type", "d", "!", "-perm", "-0700")
    assert locked == [], f"folders the host user cannot list: {locked[:10]}"


MAKE_BAD_MODES = (
    "set -e; printf '#!/bin/sh\\nid\\n' > suid; chmod 4755 suid; cp suid sgid; chmod 2755 sgid; "
    "mkdir -p shared/deeper; chmod 2777 shared; chmod 1777 shared/deeper; "
    "echo x > shared/ww; chmod 666 shared/ww; cp suid shared/deeper/both; chmod 6777 shared/deeper/both; "
    "mkdir -p node/out && echo '{}' > node/out/result.json && chmod 4666 node/out/result.json; "
    "find . -perm /6002 ! -type l | sort"
)


@pytest.mark.parametrize("user", ["root", "auto"])
def test_setuid_setgid_world_writable_stripped(project, host, runtime, record_result, user: str) -> None:
    """Setuid/setgid files and a world-writable setgid folder (2777) made by the run are stripped after hand-back."""
    name = "handback-setuid-root-run" if user == "root" else "handback-setuid"
    got = attack(name, project, host, runtime, ["sh", "-c", MAKE_BAD_MODES], expect=COMPLETED, record=record_result,
                 defends="hand-back strips setuid/setgid/o+w (fd-relative walk)", user=user)
    assert got.metadata.output.lines_kept >= 5  # the run did make them: its own find listed them
    assert_handed_back(got)


def test_locked_folders(project, host, runtime, record_result) -> None:
    """Folders the run locked (chmod 000), with a setuid file inside, are unlocked and stripped."""
    script = ("set -e; mkdir -p locked/inner; cp /bin/true locked/inner/t; chmod 6755 locked/inner/t; "
              "chmod 000 locked/inner; chmod 000 locked; mkdir open; chmod 0 open")
    got = attack("handback-locked-folders", project, host, runtime, ["sh", "-c", script], expect=COMPLETED,
                 record=record_result, defends="hand-back opens locked folders through a pinned handle",
                 user="root")
    assert_handed_back(got)
    assert (got.ctx.run_dir / "locked" / "inner" / "t").stat().st_mode & 0o7777 == 0o755


def deep_tree_code(depth: int, name: str) -> str:
    return ("import os\n"
            f"for _ in range({depth}):\n"
            f"    os.mkdir({name!r}); os.chdir({name!r})\n"
            "fd = os.open('bad', os.O_WRONLY | os.O_CREAT, 0o644); os.fchmod(fd, 0o6777); os.close(fd)\n"
            "os.chmod('.', 0o2777)\n")


def test_deeper_than_path_max(project, host, runtime, record_result) -> None:
    """A setuid, world-writable file 120 folders down (a path of ~4900 characters > PATH_MAX) is stripped."""
    got = attack("handback-deeper-than-path-max", project, host, runtime,
                 ["python3", "-c", deep_tree_code(120, "d" * 40)], expect=COMPLETED, record=record_result,
                 defends="hand-back walks by dir fds, any depth", user="root")
    assert_handed_back(got)
    assert find(got.ctx.run_dir, "-name", "bad", "-perm", "0775"), "the deep file was not found stripped"


def test_thousands_of_levels(project, host, runtime, record_result) -> None:
    """A tree 2100 folders deep neither crashes finalization nor escapes the hand-back; the quota walk,
    which holds one descriptor per level, stops at 128 levels and fails closed (disk_quota)."""
    # attack() records its row only once the run returns; a finalization that raises leaves this one
    record_result.append({"attack": "handback-2100-levels", "runtime": runtime, "status": "error",
                          "reason": "RecursionError in finalization", "defended_by": "fd-relative walks everywhere",
                          "contained": False})
    got = attack("handback-2100-levels", project, host, runtime, ["python3", "-c", deep_tree_code(2100, "dd")],
                 expect={("failed", "disk_quota")}, record=record_result,
                 defends="fd-relative walks everywhere; quota fails closed past 128 levels", user="root")
    assert_handed_back(got)


def test_links_out_are_not_followed(project, host, runtime, record_result) -> None:
    """Links to host files and folders are handed back as links: their targets keep owner and mode."""
    target = host / "secret.txt"
    script = (f"ln -s {target} to-file; ln -s {host / 'dir'} to-dir; ln -s /dad/project to-project; "
              f"ln -s {target} .trace/hop; mkdir d; ln -s ../to-dir d/again; "
              "cp /bin/true suid && chmod 4755 suid; true")
    got = attack("handback-links-out", project, host, runtime, ["sh", "-c", script], expect=COMPLETED,
                 record=record_result, defends="O_PATH|O_NOFOLLOW pins; links lchown-ed, never followed",
                 user="root")
    assert_handed_back(got)  # the harness also checks the host sentinels and the project are unchanged
    assert os.path.islink(got.ctx.run_dir / "to-file")


def test_special_files(project, host, runtime, record_result) -> None:
    """World-writable FIFOs and sockets are stripped without being opened (no hang)."""
    script = ("mkfifo ff 2>/dev/null && chmod 0666 ff; "
              "python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.bind('sock')\" 2>/dev/null; "
              "chmod 0777 sock 2>/dev/null; true")
    got = attack("handback-fifo-socket", project, host, runtime, ["sh", "-c", script], expect=COMPLETED,
                 record=record_result, defends="entries pinned with O_PATH: a FIFO is never opened", user="root")
    assert_handed_back(got)
