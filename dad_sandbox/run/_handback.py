"""Hand a run directory back to the host user: owner, and no setuid/setgid or world-writable modes.

Why: whatever the run made is hostile. A setuid file left in a run dir is a program any local user
can run with its owner's rights (root's, when the run ran as root); a world-writable folder lets
any local user change a run's results; a folder the run made unreadable (``chmod 000``) would
stop the host's own later walks, and deleting the run dir.

How, and why that way:

* **fd-relative, never following links.** Every directory is opened relative to its parent's fd
  with ``O_NOFOLLOW``; every other entry is pinned with ``O_PATH | O_NOFOLLOW`` and changed through
  that handle (``/proc/self/fd/N``), so a link swapped in between the look and the change is
  changed itself (links are only ``lchown``-ed), never its target.
* **Any depth.** Only one directory fd is held at a time (plus the listing's own), and the walk
  climbs back with ``..`` checked against the inode it came from; no path string is ever joined,
  so trees deeper than ``PATH_MAX`` or with thousands of levels are walked like any other.
* **Bounded in time.** A deadline (and a cap on names waiting to be visited) stops the walk; the
  result then says ``complete=False`` and the caller closes the tree to its owner (``0700``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from dad_sandbox._limits import HAND_BACK_SECONDS

#: mode bits taken away from every entry the run made
STRIP_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH
#: sub-folder names waiting to be visited, at most (bounds memory on a folder of millions of folders)
MAX_PENDING = 1_000_000
_MAX_PROBLEMS = 5
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PIN = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(slots=True)
class HandBack:
    """What a hand-back did; ``complete`` is False when it stopped early (deadline, moved folder)."""

    entries: int = 0
    chowned: int = 0
    stripped: int = 0
    complete: bool = True
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)


class _Stop(Exception):
    """The walk must end here (deadline, a folder moved under it)."""


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _proc(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


class _Walk:
    def __init__(self, uid: int | None, gid: int | None, deadline: float) -> None:
        self.uid, self.gid, self.deadline = uid, gid, deadline
        self.done = HandBack()

    def tick(self) -> None:
        self.done.entries += 1
        if time.monotonic() > self.deadline:
            raise _Stop("the hand-back ran out of time")

    def fix(self, target: str | int, st: os.stat_result, *, is_dir: bool) -> None:
        """Owner first (chown may clear setuid bits itself), then the mode."""
        if self.uid is not None and (st.st_uid, st.st_gid) != (self.uid, self.gid):
            os.chown(target, self.uid, self.gid if self.gid is not None else -1)
            self.done.chowned += 1
        mode = stat.S_IMODE(st.st_mode)
        new = (mode & ~STRIP_BITS) | (stat.S_IRWXU if is_dir else 0)
        if new != mode:
            os.chmod(target, new)
            # A folder made under a setgid folder inherits setgid (the run dir is setgid while a
            # root host lends it to the run's group): stripped all the same, but not something the
            # run did, so it is not counted (nor warned about) unless more than that was set.
            inherited = is_dir and mode & STRIP_BITS == stat.S_ISGID
            if mode & STRIP_BITS and not inherited:
                self.done.stripped += 1

    def open_dir(self, parent: int | None, name: str | Path) -> int | None:
        """Open a folder for listing, first making it listable by its owner if the run locked it."""
        try:
            return os.open(name, _DIR, dir_fd=parent) if parent is not None else os.open(name, _DIR & ~os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except PermissionError:
            pass  # e.g. chmod 000 by a run that shares the host's uid: fix through a pinned handle
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                return None  # replaced by a link or a file since it was listed: not a folder to enter
            raise
        pin = os.open(name, _PIN | os.O_DIRECTORY, dir_fd=parent) if parent is not None else os.open(name, _PIN)
        try:
            st = os.fstat(pin)
            self.fix(_proc(pin), st, is_dir=True)
            return os.open(_proc(pin), _DIR & ~os.O_NOFOLLOW)
        finally:
            os.close(pin)

    def fix_entry(self, dir_fd: int, name: str) -> bool:
        """Fix one entry that is not a folder; True if it turned out to be a folder to visit."""
        try:
            pin = os.open(name, _PIN, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        try:
            st = os.fstat(pin)
            if stat.S_ISDIR(st.st_mode):
                return True
            if stat.S_ISLNK(st.st_mode):  # O_PATH|O_NOFOLLOW pins the link itself: own it, never follow it
                if self.uid is not None and (st.st_uid, st.st_gid) != (self.uid, self.gid):
                    os.chown(name, self.uid, self.gid if self.gid is not None else -1, dir_fd=dir_fd,
                             follow_symlinks=False)
                    self.done.chowned += 1
                return False
            self.fix(_proc(pin), st, is_dir=False)
            return False
        finally:
            os.close(pin)

    def list_dir(self, dir_fd: int) -> list[str]:
        """Fix every non-folder entry of ``dir_fd``; return the names of its sub-folders."""
        folders: list[str] = []
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                self.tick()
                try:
                    if self.fix_entry(dir_fd, entry.name):
                        folders.append(entry.name)
                except OSError as exc:
                    self.done.problem(f"{entry.name!r}: {exc.strerror or exc}")
        return folders

    def run(self, root: Path) -> HandBack:
        cur = self.open_dir(None, root)
        if cur is None:
            return self.done
        try:
            self.fix(cur, os.fstat(cur), is_dir=True)
            self.done.stripped = 0  # the root's mode is the host's own doing (prepare() makes it setgid): not counted
            idents = [_ident(os.fstat(cur))]
            pending = [self.list_dir(cur)]
            waiting = len(pending[0])
            while pending:
                if not pending[-1]:  # this folder is done: climb back to the one we came from
                    pending.pop()
                    idents.pop()
                    if not pending:
                        break
                    parent = os.open("..", _DIR, dir_fd=cur)
                    if _ident(os.fstat(parent)) != idents[-1]:
                        os.close(parent)
                        raise _Stop("a folder moved during the hand-back")
                    os.close(cur)
                    cur = parent
                    continue
                name = pending[-1].pop()
                waiting -= 1
                try:
                    child = self.open_dir(cur, name)
                except OSError as exc:
                    self.done.problem(f"{name!r}: {exc.strerror or exc}")
                    continue
                if child is None:
                    continue
                try:
                    self.fix(child, os.fstat(child), is_dir=True)
                    names = self.list_dir(child)
                except OSError as exc:  # a folder we may not change or list: note it, go on
                    self.done.problem(f"{name!r}: {exc.strerror or exc}")
                    names = []
                except BaseException:
                    os.close(child)
                    raise
                os.close(cur)
                cur = child
                idents.append(_ident(os.fstat(cur)))
                pending.append(names)
                waiting += len(names)
                if waiting > MAX_PENDING:
                    raise _Stop(f"more than {MAX_PENDING} folders waiting to be visited")
        except _Stop as stop:
            self.done.complete = False
            self.done.problem(str(stop))
        finally:
            os.close(cur)
        return self.done


def hand_back_tree(
    root: Path, uid: int | None = None, gid: int | None = None, *, timeout: float = HAND_BACK_SECONDS
) -> HandBack:
    """Give every entry under ``root`` to ``uid:gid`` (None: keep owners) and strip setuid, setgid
    and world-write bits; folders also get ``u+rwx`` so their owner can list and remove them.

    Never follows a link, works at any depth, and stops after ``timeout`` seconds
    (``complete=False``). Entries it cannot change are counted in ``problems``, not raised.

    Raises:
        OSError: ``root`` itself cannot be opened.
    """
    return _Walk(uid, gid, time.monotonic() + timeout).run(root)


def close_to_owner(root: Path) -> None:
    """Last resort after an incomplete hand-back: nobody but the owner may enter the tree."""
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
