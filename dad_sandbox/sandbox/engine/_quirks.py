"""What a Docker-compatible engine does differently from Docker, learned from its behaviour.

Podman's Docker-compatible API (measured with Podman 4.3) accepts the Docker calls dad-sandbox
makes but differs in three ways that matter to a sandbox:

* ``Config.NetworkDisabled`` is ignored: the container joins Podman's default bridge (with a
  route to the host's networks) instead of having only ``lo``. Detected on the first create that
  asks for no network, by reading the created container back (before it ever starts); from then
  on ``HostConfig.NetworkMode = "none"`` is sent as well.
* ``SecurityOpt seccomp=<profile>`` is read as a *file path*, where Docker takes the profile's
  content ("opening seccomp profile failed: open {...}"). Detected from that refusal; from then
  on the profile is written to a private file and its path is sent.
* tmpfs mounts get ``tmpcopyup``: the tmpfs starts with a copy of what lies under it. Our masks
  (an empty tmpfs over the run root inside the project) would then carry a copy of every other
  run into the container. Detected from the options the engine reports for the first container
  with a tmpfs (read back before it starts); from then on ``notmpcopyup`` is asked for.
* rlimits: a container created with any ``Ulimits`` loses the engine's configured defaults
  (containers.conf ``default_ulimits``) and gets nofile/nproc of 1048576 instead, which fail to
  start where the service's own limits are lower ("error setting rlimit type 7"). Detected when the
  first container with ulimits reads back limits we did not ask for: a container without ulimits
  is then created (never started) to read the engine's defaults, which are sent explicitly from
  then on.
* ``HostConfig.Runtime`` is ignored (the read-back says ``"oci"``): a run asking for gVisor
  would silently run on the default runtime. Detected on the first create that names a runtime
  other than runc; from then on such a run is refused before any container is made.
* ``State.OOMKilled`` stays false when the kernel's OOM killer killed the run: not handled, such a
  run ends ``crashed (signal:SIGKILL)`` (README, "Engines").

Nothing here looks at the engine's URL or name: each quirk is a fact about what the engine did.
On Docker none of them is ever set, so Docker runs are unchanged (one extra inspect of the first
container each engine object creates).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dad_sandbox.errors import EngineError


@dataclass(slots=True)
class EngineQuirks:
    """Per-engine-object facts, learned once (an engine does not change its API under us)."""

    #: ``None`` until the first container asking for no network was read back.
    network_disabled_ignored: bool | None = None
    #: ``None`` until the first container with a tmpfs was read back.
    tmpfs_copies_up: bool | None = None
    #: ``None`` until the first container with ulimits was read back; then the engine's default
    #: rlimits that it drops when a request names some (empty: it keeps them, as Docker does).
    ulimit_defaults: dict[str, tuple[int, int]] | None = None
    #: ``None`` until the first container asking for a runtime other than runc was read back.
    runtime_honoured: bool | None = None
    #: the engine wants a seccomp profile as a path to a file, not as its content
    seccomp_by_path: bool = False

    def learn(self, inspected: dict[str, Any], *, asked_no_network: bool, asked_tmpfs: bool) -> bool:
        """Learn what the first containers' read-back shows; True if this container must be remade.

        The rlimit quirk is learned apart (``ulimits_added`` + ``learn_ulimit_defaults``): it needs
        a second, bare container to read the engine's defaults from.
        """
        remake = False
        if asked_no_network and self.network_disabled_ignored is None:
            self.network_disabled_ignored = not network_disabled_honoured(inspected)
            remake |= self.network_disabled_ignored
        if asked_tmpfs and self.tmpfs_copies_up is None:
            self.tmpfs_copies_up = tmpfs_copied_up(inspected)
            remake |= self.tmpfs_copies_up
        return remake

    def must_read_back(self, *, asked_no_network: bool, asked_tmpfs: bool, asked_ulimits: bool) -> bool:
        return (
            (asked_no_network and self.network_disabled_ignored is None)
            or (asked_tmpfs and self.tmpfs_copies_up is None)
            or (asked_ulimits and self.ulimit_defaults is None)
        )

    def learn_ulimit_defaults(self, bare: dict[str, Any] | None) -> bool:
        """Record the rlimits of a container created without any (``None``: nothing was added)."""
        self.ulimit_defaults = rlimits(bare) if bare is not None else {}
        return bool(self.ulimit_defaults)

    def ulimits(self, asked: dict[str, int]) -> dict[str, tuple[int, int]]:
        """The rlimits to send: what the policy asks, plus the engine's defaults it would drop."""
        out = dict(self.ulimit_defaults or {})
        out.update({name: (value, value) for name, value in asked.items()})
        return out

    def tmpfs_options(self, options: str) -> str:
        """A tmpfs's options as this engine must get them (an empty mask stays empty)."""
        if self.tmpfs_copies_up and "notmpcopyup" not in options.split(","):
            return f"{options},notmpcopyup" if options else "notmpcopyup"
        return options


def network_disabled_honoured(inspected: dict[str, Any]) -> bool:
    """Whether a container created with ``NetworkDisabled`` really has no network attached.

    Docker keeps ``Config.NetworkDisabled`` and attaches no network; an engine that ignores the
    flag attaches one (Podman: ``HostConfig.NetworkMode = "bridge"``, ``Networks = {"podman": …}``).
    """
    config = inspected.get("Config") or {}
    networks = (inspected.get("NetworkSettings") or {}).get("Networks") or {}
    mode = (inspected.get("HostConfig") or {}).get("NetworkMode") or ""
    if config.get("NetworkDisabled"):
        return True
    return not networks and mode in ("", "none", "default")


def rlimits(inspected: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """A container's rlimits as ``{"nofile": (soft, hard)}`` (Podman names them ``RLIMIT_NOFILE``)."""
    out = {}
    for item in (inspected.get("HostConfig") or {}).get("Ulimits") or []:
        name = str(item.get("Name", "")).lower().removeprefix("rlimit_")
        if name and isinstance(item.get("Soft"), int) and isinstance(item.get("Hard"), int):
            out[name] = (item["Soft"], item["Hard"])
    return out


def ulimits_added(inspected: dict[str, Any], asked: dict[str, int]) -> bool:
    """Whether the engine set rlimits the request did not name (Docker sets only those asked for)."""
    return bool(set(rlimits(inspected)) - set(asked))


def runtime_honoured(inspected: dict[str, Any], asked: str) -> bool:
    """Whether the container got the OCI runtime it asked for (Podman's compat API reports ``oci``)."""
    return (inspected.get("HostConfig") or {}).get("Runtime") == asked


def needs_runtime_check(runtime: str | None) -> bool:
    """Runtimes whose absence would weaken isolation: every one but the engines' default, runc."""
    return runtime not in (None, "", "runc")


def tmpfs_copied_up(inspected: dict[str, Any]) -> bool:
    """Whether the engine added copy-up to a container's tmpfs mounts (Podman: ``tmpcopyup``)."""
    tmpfs = (inspected.get("HostConfig") or {}).get("Tmpfs") or {}
    return any("tmpcopyup" in str(opts).split(",") for opts in tmpfs.values())


def is_seccomp_path_refusal(message: str) -> bool:
    """The engine tried to open the profile's content as a file (Podman's compat API)."""
    return "seccomp profile" in message and ("open {" in message or "no such file" in message.lower())


def seccomp_profile_file(profile: str, directory: Path | None = None) -> str:
    """Write ``profile`` to a private, content-addressed file and return its path.

    The file lives in a per-user directory of mode 0700 that must be ours and not a link (so no
    other user can swap the profile between our write and the engine's read); it is written to a
    temporary name and renamed, so a reader never sees half a profile. The engine must see the
    host's files, as it must for the run dir's bind mount anyway.
    """
    base = directory or Path(tempfile.gettempdir()) / f"dad-sandbox-{os.getuid()}" / "seccomp"
    for path in (base.parent, base):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise EngineError(f"{path} is not a private directory of yours (mode 0700); remove it so that "
                              "dad-sandbox can write the seccomp profile the engine reads from a file")
    digest = hashlib.sha256(profile.encode()).hexdigest()[:32]
    target = base / f"{digest}.json"
    if target.is_file() and not target.is_symlink():
        return str(target)
    fd, tmp = tempfile.mkstemp(dir=base, prefix=".profile-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(profile)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(target)


__all__ = [
    "EngineQuirks",
    "is_seccomp_path_refusal",
    "network_disabled_honoured",
    "seccomp_profile_file",
    "needs_runtime_check",
    "rlimits",
    "runtime_honoured",
    "tmpfs_copied_up",
    "ulimits_added",
]
