"""Who the container runs as, and how the run directory is shared with that user.

Measured facts (DESIGN.md): a non-root container user cannot write into a root-owned 0755 bind
mount, and files it writes appear on the host under its numeric uid. So:

* host user is not root: the container runs as the host's own uid:gid; files stay the user's.
* host user is root and the policy says ``auto``: the container runs as 65534:65534 (nobody). The
  run dir is handed to that group for the run (setgid + sticky, group-writable) so the run can
  create node folders; the runner's staging folder ``.runner/`` is given to it. ``.trace/`` and
  ``static_inputs/`` are mounted read-only into the container whoever owns them (see ``_spec``).
  After the run everything is handed back to the host user (:func:`reclaim`), without following
  links, and setuid, setgid and world-writable modes are stripped whoever the host user is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dad_sandbox._logging import get_logger
from dad_sandbox.run import _safe_fs
from dad_sandbox.run._handback import HandBack, close_to_owner, hand_back_tree
from dad_sandbox.run._layout import RUNNER_DIR

log = get_logger(__name__)

NOBODY = 65534


@dataclass(frozen=True, slots=True)
class RunUser:
    """The uid:gid a run's container uses, and the host owner the run dir goes back to."""

    uid: int
    gid: int
    host_uid: int
    host_gid: int

    @property
    def docker_user(self) -> str:
        return f"{self.uid}:{self.gid}"

    @property
    def needs_handover(self) -> bool:
        """True when the container user differs from the host owner (so ownership must move)."""
        return (self.uid, self.gid) != (self.host_uid, self.host_gid)


def resolve_user(policy_user: str) -> RunUser:
    """Turn a policy's ``user`` into concrete ids for this host."""
    host_uid, host_gid = os.getuid(), os.getgid()
    if policy_user == "root":
        uid, gid = 0, 0
    elif policy_user == "auto":
        uid, gid = (NOBODY, NOBODY) if host_uid == 0 else (host_uid, host_gid)
    else:
        u, _, g = policy_user.partition(":")
        uid, gid = int(u), int(g or u)
    return RunUser(uid, gid, host_uid, host_gid)


def prepare(run_dir: Path, user: RunUser) -> None:
    """Let the container user write node folders and ``.runner/``, nothing the host owns."""
    with _safe_fs.opened_dir(run_dir, RUNNER_DIR, create=True) as fd:
        if user.needs_handover and user.uid != 0 and os.getuid() == 0:
            os.fchown(fd, user.uid, user.gid)
        elif user.needs_handover:
            os.fchmod(fd, 0o777)
    if user.needs_handover and user.uid != 0:
        with _safe_fs.opened_dir(run_dir) as fd:
            if os.getuid() == 0:
                os.fchown(fd, user.host_uid, user.gid)
                os.fchmod(fd, 0o3775)  # setgid + sticky: its entries can't be renamed by the run
            else:
                os.fchmod(fd, 0o1777)


def reclaim(run_dir: Path, user: RunUser) -> HandBack:
    """Hand the run dir back to the host user: owner (when the host is root), no setuid/setgid or
    world-writable modes anywhere, folders listable again; the run dir itself ``0755``.

    Runs for every run, not only when the uid changed: a run that shares the host's uid can still
    leave a setuid or world-writable file, or a folder it made unreadable. If the walk is cut short
    (time budget), the run dir is closed to its owner (``0700``) so that nothing left below it is
    reachable by other local users, and the result says so.
    """
    owner = (user.host_uid, user.host_gid) if os.getuid() == 0 else (None, None)
    done = hand_back_tree(run_dir, *owner)
    if done.complete:
        with _safe_fs.opened_dir(run_dir) as fd:
            os.fchmod(fd, 0o755)
    else:
        close_to_owner(run_dir)
        log.warning("hand-back of the run dir incomplete: closed it to its owner", run_dir=str(run_dir),
                    entries=done.entries, problems=done.problems)
    if done.stripped:
        log.warning("the run left setuid/setgid or world-writable entries: stripped", run_dir=str(run_dir),
                    stripped=done.stripped)
    return done
