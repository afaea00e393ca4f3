"""How much disk a run directory uses, measured without following links, at any depth.

Overlay2 on ext4 gives no per-container disk quota, so the supervisor measures the run dir itself,
and the run is hostile: it may nest folders deeper than PATH_MAX, make a folder unreadable, or
create millions of entries. So the walk

* is fd-relative (``openat``/``fstatat`` from the parent's descriptor, ``O_NOFOLLOW``): no path
  string is ever built, so depth is limited only by :data:`MAX_DEPTH` open descriptors, and a
  folder nested deeper than that makes the measurement *incomplete*;
* counts blocks actually allocated (a sparse file costs what it stores), each inode once;
* is bounded by an entry budget and a deadline; running out of either is *incomplete*;
* with ``repair=True`` gives back search/read permission to folders the host user owns (a run
  that shares the host's uid can ``chmod 000`` a folder; the owner can always undo that). The
  chmod goes through an ``O_PATH`` descriptor, so a folder swapped for a link is never followed.

An incomplete walk is treated by the supervisor as over the quota: it fails closed.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

#: Folders deeper than this below the run dir are not walked (the measurement is then incomplete).
MAX_DEPTH = 128
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class DirUsage:
    """Allocated bytes and entries under a folder; ``problem`` says why it is incomplete."""

    bytes: int
    entries: int
    complete: bool
    problem: str | None = None


def _repair(parent_fd: int, name: str) -> bool:
    """Give u+rwx back to a folder we own; True if it was a folder of ours and is now fixed."""
    try:
        pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    except OSError:
        return False
    try:
        st = os.fstat(pfd)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            return False
        os.chmod(f"/proc/self/fd/{pfd}", stat.S_IMODE(st.st_mode) | 0o700)
        return True
    except OSError:
        return False
    finally:
        os.close(pfd)


def _open_child(parent_fd: int, name: str, repair: bool) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM) and repair and _repair(parent_fd, name):
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            except OSError:
                return None
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return -1  # gone or swapped for a non-folder since listed: nothing to count
        return None


def _searchable(fd: int, repair: bool) -> None:
    """A folder we own but may not read or search (``chmod 0444``/``000``) gets u+rwx back."""
    if not repair:
        return
    st = os.fstat(fd)
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)


class _Tally:
    """Running totals of one walk; an inode is remembered only when it has several links."""

    __slots__ = ("bytes", "entries", "seen")

    def __init__(self) -> None:
        self.bytes = 0
        self.entries = 0
        self.seen: set[tuple[int, int]] = set()

    def scan(self, fd: int, max_entries: int) -> list[str] | None:
        """Count the entries of folder ``fd``; its sub-folder names, or None past ``max_entries``.

        Raises:
            OSError: the folder cannot be listed, or an entry cannot be examined (not just vanished).
        """
        subdirs: list[str] = []
        with os.scandir(fd) as it:
            for entry in it:
                self.entries += 1
                if self.entries > max_entries:
                    return None
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(entry.name)
                elif st.st_nlink > 1:  # a hard link: count its blocks once
                    key = (st.st_dev, st.st_ino)
                    if key in self.seen:
                        continue
                    self.seen.add(key)
                self.bytes += st.st_blocks * 512
        return subdirs


def dir_usage(
    root: Path | int,
    *,
    max_entries: int = 200_000,
    budget: float = 10.0,
    repair: bool = False,
) -> DirUsage:
    """Allocated bytes and entry count under ``root`` (a trusted host path, or an open folder fd).

    ``complete`` is False when a folder could not be read, nesting went past :data:`MAX_DEPTH`, the
    entry budget (``max_entries``) or the time budget (``budget`` seconds) ran out.
    """
    deadline = time.monotonic() + budget
    tally = _Tally()
    try:
        if isinstance(root, int):
            top = os.dup(root)
        else:
            if repair and os.stat(root).st_uid == os.geteuid():
                os.chmod(root, stat.S_IMODE(os.stat(root).st_mode) | 0o700)  # a host path we trust
            top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        return DirUsage(0, 0, False, f"cannot open the run dir: {exc.strerror}")
    top_st = os.fstat(top)
    tally.bytes += top_st.st_blocks * 512
    # Depth-first; one open descriptor per level: (fd, names of sub-folders still to visit).
    stack: list[tuple[int, list[str]]] = []
    problem: str | None = None
    current: int | None = top
    try:
        while current is not None or stack:
            if current is not None:
                fd, current = current, None
                try:
                    _searchable(fd, repair)
                    subdirs = tally.scan(fd, max_entries)
                except OSError as exc:
                    os.close(fd)
                    problem = f"a folder could not be read ({exc.strerror})"
                    break
                stack.append((fd, subdirs or []))
                if subdirs is None:
                    problem = f"more than {max_entries} entries"
                    break
            if time.monotonic() > deadline:
                problem = f"the walk took longer than {budget:g}s"
                break
            fd, todo = stack[-1]
            if not todo:
                os.close(fd)
                stack.pop()
                continue
            if len(stack) > MAX_DEPTH:
                problem = f"folders nested deeper than {MAX_DEPTH} levels"
                break
            child = _open_child(fd, todo.pop(), repair)
            if child is None:
                problem = "a folder could not be opened (no permission)"
                break
            if child >= 0:
                current = child
    finally:
        for fd, _ in stack:
            os.close(fd)
    return DirUsage(tally.bytes, tally.entries, problem is None, problem)
