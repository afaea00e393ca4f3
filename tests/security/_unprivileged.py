"""Run the dad-sandbox CLI as an unprivileged host user in the engine's group (e.g. ``docker``).

Why: when the host user is not root, a run executes under the host user's own uid, so it shares
every file permission with the supervisor that watches it. That is the setting in which a run can
lock, rewrite or forge host state, and the red-team cases in ``test_unprivileged_host.py`` try it.

The user ``dad-redteam`` is created once, idempotently (``useradd``; joined to the socket's group
with ``usermod -aG`` if needed). Each test gets a project folder that user owns, outside pytest's
temp root (which is 0700 and root's), and removed afterwards. Without root the cases are skipped
with the reason; under ``CI=true`` a setup that cannot be made is a failure.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests._support import IN_CI, closed_to_others

USER = "dad-redteam"
CLI = [sys.executable, "-m", "dad_sandbox.cli"]


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the non-root host cases must run)")
    pytest.skip(reason)


@dataclass(frozen=True)
class HostUser:
    name: str
    uid: int
    gid: int
    engine_group: str


def _engine_socket() -> Path:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        unavailable(f"DOCKER_HOST={host} is not a local socket: no group to put the unprivileged user in")
    return Path(host.removeprefix("unix://"))


def ensure_host_user() -> HostUser:
    """The unprivileged user, created if missing, in the group that may use the engine's socket."""
    if os.getuid() != 0:
        unavailable("needs root to create the unprivileged host user (run the security suite as root)")
    if (closed := closed_to_others()) is not None:
        pytest.skip(f"{closed} is closed to other users, so {USER} cannot run this checkout's CLI: "
                    "clone the project where other users can enter to run these cases")
    for tool in ("useradd", "usermod", "setpriv"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is missing (Debian: apt-get install passwd util-linux)")
    sock = _engine_socket()
    try:
        gid = sock.stat().st_gid
    except OSError as exc:
        unavailable(f"cannot stat the engine socket {sock}: {exc}")
        raise
    if gid == 0:
        unavailable(f"the engine socket {sock} belongs to group root: no 'docker' group to join")
    group = grp.getgrgid(gid).gr_name
    try:
        pwd.getpwnam(USER)
    except KeyError:
        done = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                               "--groups", group, USER], capture_output=True, text=True)
        if done.returncode not in (0, 9):  # 9: made meanwhile by another process
            unavailable(f"useradd {USER} failed: {done.stderr.strip()}")
    if USER not in grp.getgrnam(group).gr_mem:
        subprocess.run(["usermod", "-aG", group, USER], check=True, capture_output=True)
    entry = pwd.getpwnam(USER)
    return HostUser(USER, entry.pw_uid, entry.pw_gid, group)


@dataclass
class Workspace:
    """A folder owned by the unprivileged user: its project (runs go to ./runs) and its own host files."""

    user: HostUser
    base: Path
    project: Path
    host: Path

    def chown(self, path: Path) -> None:
        os.chown(path, self.user.uid, self.user.gid)

    def cli(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        """The CLI as the unprivileged user (groups from /etc/group), from the project folder."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.project),
            "LANG": "C.UTF-8",
            "DAD_SANDBOX_NO_SERVER": "1",
            **{k: os.environ[k] for k in ("DAD_SANDBOX_RUNNER_TAG", "DOCKER_HOST", "CI") if k in os.environ},
        }
        argv = ["setpriv", f"--reuid={self.user.uid}", f"--regid={self.user.gid}", "--init-groups", *CLI, *args]
        return subprocess.run(argv, cwd=self.project, env=env, capture_output=True, text=True, timeout=timeout)

    def cli_json(self, *args: str) -> dict[str, Any]:
        done = self.cli(*args)
        try:
            return dict(json.loads(done.stdout))
        except ValueError:
            raise AssertionError(f"no JSON from the CLI (exit {done.returncode}): {done.stdout[-1500:]}"
                                 f"{done.stderr[-3000:]}") from None


@pytest.fixture(scope="session")
def host_user() -> HostUser:
    return ensure_host_user()


@pytest.fixture
def workspace(host_user: HostUser) -> Iterator[Workspace]:
    base = Path(tempfile.mkdtemp(prefix="dad-nonroot-"))
    base.chmod(0o755)
    ws = Workspace(host_user, base, base / "project", base / "host")
    for folder in (ws.project, ws.host, ws.host / "dir"):
        folder.mkdir()
        ws.chown(folder)
    for path, text, mode in ((ws.host / "secret.txt", "the user's secret\n", 0o600),
                             (ws.host / "dir" / "notes.txt", "notes\n", 0o644),
                             (ws.project / "sentinel.txt", "project data\n", 0o644)):
        path.write_text(text)
        path.chmod(mode)
        ws.chown(path)
    try:
        yield ws
    finally:
        subprocess.run(["rm", "-rf", "--", str(base)], check=False)
