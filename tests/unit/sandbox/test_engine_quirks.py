"""Engine quirks are learned from what the engine reports (inspect data shaped as Docker and Podman 4.3 return it)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dad_sandbox._doctor_engine import engine_name, fix_for
from dad_sandbox.errors import EngineError
from dad_sandbox.sandbox.engine._quirks import (
    EngineQuirks,
    is_seccomp_path_refusal,
    needs_runtime_check,
    network_disabled_honoured,
    runtime_honoured,
    seccomp_profile_file,
    tmpfs_copied_up,
    ulimits_added,
)

# Read back from real engines on this machine (trimmed): a container created with NetworkDisabled,
# a tmpfs and an fsize ulimit.
DOCKER = {
    "Config": {"NetworkDisabled": True},
    "HostConfig": {"NetworkMode": "default", "Tmpfs": {"/tmp/x": "ro,size=1k,mode=0755"},
                   "Ulimits": [{"Name": "fsize", "Soft": 1000000, "Hard": 1000000}]},
    "NetworkSettings": {"Networks": {}},
}
PODMAN = {
    "Config": {},
    "HostConfig": {"NetworkMode": "bridge", "Tmpfs": {"/tmp/x": "ro,size=1k,mode=0755,rprivate,nosuid,nodev,tmpcopyup"},
                   "Ulimits": [{"Name": "RLIMIT_NOFILE", "Hard": 1048576, "Soft": 1048576},
                               {"Name": "RLIMIT_FSIZE", "Hard": 1000000, "Soft": 1000000},
                               {"Name": "RLIMIT_NPROC", "Hard": 1048576, "Soft": 1048576}]},
    "NetworkSettings": {"Networks": {"podman": {}}},
}
PODMAN_BARE = {"HostConfig": {"Ulimits": [{"Name": "RLIMIT_NOFILE", "Hard": 20000, "Soft": 20000},
                                          {"Name": "RLIMIT_NPROC", "Hard": 32768, "Soft": 32768}]}}
ASKED = {"asked_no_network": True, "asked_tmpfs": True}


def test_docker_teaches_no_quirk() -> None:
    """On Docker's read-back nothing is learned, so its containers are never remade or changed."""
    quirks = EngineQuirks()
    assert quirks.must_read_back(**ASKED, asked_ulimits=True)
    assert not quirks.learn(DOCKER, **ASKED)
    assert not ulimits_added(DOCKER, {"fsize": 1000000})
    assert not quirks.learn_ulimit_defaults(None)
    assert not quirks.must_read_back(**ASKED, asked_ulimits=True)
    assert quirks.tmpfs_options("size=8m") == "size=8m"
    assert quirks.ulimits({"fsize": 5}) == {"fsize": (5, 5)}
    assert not quirks.seccomp_by_path


def test_podman_read_back_teaches_every_quirk() -> None:
    """Podman's read-back shows a network attached, tmpfs copy-up and rlimits it added: all three are learned."""
    quirks = EngineQuirks()
    assert quirks.learn(PODMAN, **ASKED)
    assert quirks.network_disabled_ignored and quirks.tmpfs_copies_up
    assert ulimits_added(PODMAN, {"fsize": 1000000})
    assert quirks.learn_ulimit_defaults(PODMAN_BARE)
    assert quirks.tmpfs_options("size=8m") == "size=8m,notmpcopyup"
    assert quirks.tmpfs_options("") == "notmpcopyup"
    assert quirks.ulimits({"fsize": 5}) == {"nofile": (20000, 20000), "nproc": (32768, 32768), "fsize": (5, 5)}
    assert quirks.ulimits({"nofile": 64}) == {"nofile": (64, 64), "nproc": (32768, 32768)}


def test_network_mode_none_counts_as_honoured() -> None:
    """A container in network mode none with no network attached is what a run needs."""
    assert network_disabled_honoured({"HostConfig": {"NetworkMode": "none"}, "NetworkSettings": {"Networks": {}}})
    assert not network_disabled_honoured({"HostConfig": {"NetworkMode": "none"},
                                          "NetworkSettings": {"Networks": {"bridge": {}}}})
    assert not tmpfs_copied_up({"HostConfig": {"Tmpfs": {"/a": "notmpcopyup"}}})


def test_seccomp_refusal_is_recognised() -> None:
    """Podman's 'opening seccomp profile failed: open {…' is the by-path quirk; other errors are not."""
    assert is_seccomp_path_refusal('container create: opening seccomp profile failed: open { "comment": 1')
    assert not is_seccomp_path_refusal("no such image")


def test_seccomp_profile_file_is_private_and_content_addressed(tmp_path: Path) -> None:
    """The profile goes to a 0700 directory of ours, under a name derived from its content."""
    base = tmp_path / "priv" / "seccomp"
    first = seccomp_profile_file('{"a": 1}', base)
    assert seccomp_profile_file('{"a": 1}', base) == first
    assert Path(first).read_text() == '{"a": 1}'
    assert seccomp_profile_file('{"a": 2}', base) != first
    assert stat.S_IMODE(os.lstat(base).st_mode) == 0o700


def test_seccomp_profile_file_refuses_a_shared_directory(tmp_path: Path) -> None:
    """A directory others can write is refused: they could swap the profile before the engine reads it."""
    base = tmp_path / "open" / "seccomp"
    base.mkdir(parents=True)
    base.chmod(0o777)
    with pytest.raises(EngineError, match="private directory"):
        seccomp_profile_file("{}", base)


def test_doctor_names_the_fix_and_the_engine() -> None:
    """doctor turns the engine's refusals seen on Podman into what to install or set."""
    assert "catatonit" in fix_for("container-init binary not found on the host")
    assert "default_ulimits" in fix_for("error setting rlimit type 7: operation not permitted")
    assert "runc" in fix_for("crun: cgroups in hybrid mode not supported")
    assert engine_name({"Version": "4.3.1", "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]}) == "Podman 4.3.1"
    assert engine_name({"Version": "20.10.24", "Components": [{"Name": "Engine"}]}) == "Docker 20.10.24"


def test_a_runtime_the_engine_ignores_is_seen() -> None:
    """Podman reports runtime 'oci' for a container that asked for runsc; Docker reports what was asked."""
    assert not runtime_honoured({"HostConfig": {"Runtime": "oci"}}, "runsc")
    assert runtime_honoured({"HostConfig": {"Runtime": "runsc"}}, "runsc")
    assert needs_runtime_check("runsc") and not needs_runtime_check("runc") and not needs_runtime_check(None)
