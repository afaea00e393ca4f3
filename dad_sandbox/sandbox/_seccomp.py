"""Seccomp profiles named by a policy's ``seccomp`` key.

A policy says ``seccomp = "untrusted"`` (a profile file ``seccomp/untrusted.json`` beside the
built-in policies, or in a folder of ``$DAD_SANDBOX_POLICY_PATH``), ``seccomp = "/abs/path.json"``,
or ``seccomp = "docker-default"`` for the engine's own profile. The profile is read and checked
when the policy is loaded, so a missing or malformed file fails with the policy's error rather
than as an engine error at container start. Its sha256 (of the file's bytes, so that
``sha256sum`` on the file gives the same) goes into the run's metadata beside the policy hash.

Why the JSON goes to the engine as text: the Docker API takes the profile's content in
``security_opt`` (``seccomp=<json>``), the way the ``docker`` CLI sends it; the engine never
reads a file of ours.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dad_sandbox.errors import PolicyError

#: The engine's own default profile: nothing is passed, the engine applies what it ships.
DOCKER_DEFAULT = "docker-default"
#: Sub-folder of a policy folder that holds named profiles.
PROFILE_DIR = "seccomp"
#: A profile is a few dozen KiB; anything much larger is a mistake, not a profile.
MAX_PROFILE_BYTES = 1 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ACTIONS = ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
            "SCMP_ACT_TRAP", "SCMP_ACT_TRACE", "SCMP_ACT_LOG")


class _Rule(BaseModel):
    """One ``syscalls`` entry; unknown keys (``args``, ``includes``, ``comment``…) are the engine's to read."""

    model_config = ConfigDict(extra="allow")

    names: list[str] = Field(min_length=1)
    action: str


class _ProfileShape(BaseModel):
    """The part of a profile we check before the engine sees it."""

    model_config = ConfigDict(extra="allow")

    defaultAction: str
    syscalls: list[_Rule] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SeccompProfile:
    """A resolved profile: its JSON text for the engine (None: the engine's default) and its hash."""

    name: str
    path: Path | None = None
    text: str | None = None
    sha256: str | None = None


def check_name(value: str) -> str:
    """Syntax of the policy value: ``docker-default``, a profile name, or a path to a ``.json`` file."""
    if value == DOCKER_DEFAULT or _is_path(value) or _NAME_RE.match(value):
        return value
    raise ValueError(
        f"must be {DOCKER_DEFAULT!r}, the name of a profile in a policies/{PROFILE_DIR}/ folder "
        "(e.g. 'untrusted'), or a path to a .json profile"
    )


def _is_path(value: str) -> bool:
    return "/" in value or value.endswith(".json") or value.startswith("~")


def available_profiles(policy_dirs: list[Path]) -> list[str]:
    """Names of the profiles found in the ``seccomp/`` folder of each policy folder."""
    names = {p.stem for d in policy_dirs for p in (d / PROFILE_DIR).glob("*.json")}
    return [DOCKER_DEFAULT, *sorted(names)]


def resolve(value: str, policy_dirs: list[Path]) -> SeccompProfile:
    """Find, read and check the profile a policy names.

    Raises:
        PolicyError: no such profile (the message lists the available names), unreadable, too
            large, not JSON, or not shaped like a seccomp profile.
    """
    if value == DOCKER_DEFAULT:
        return SeccompProfile(DOCKER_DEFAULT)
    if _is_path(value):
        path = Path(value).expanduser()
    else:
        candidates = [d / PROFILE_DIR / f"{value}.json" for d in policy_dirs]
        found = [c for c in candidates if c.is_file()]
        if not found:
            names = ", ".join(available_profiles(policy_dirs))
            raise PolicyError(f"no seccomp profile named {value!r}; available: {names}; or give a path to a .json file")
        path = found[0]
    try:
        st = path.stat()
    except OSError as exc:
        raise PolicyError(f"cannot read seccomp profile {path}: {exc}") from exc
    return _load(str(path.resolve()), st.st_mtime_ns, st.st_size, value)


@functools.lru_cache(maxsize=32)
def _load(path: str, mtime_ns: int, size: int, name: str) -> SeccompProfile:
    """Read and check one profile file; cached by path, mtime and size (a changed file is re-read)."""
    del mtime_ns  # part of the cache key only
    if size > MAX_PROFILE_BYTES:
        raise PolicyError(f"seccomp profile {path} is {size} bytes, more than {MAX_PROFILE_BYTES}: not a profile")
    try:
        raw = Path(path).read_bytes()[: MAX_PROFILE_BYTES + 1]
    except OSError as exc:
        raise PolicyError(f"cannot read seccomp profile {path}: {exc}") from exc
    try:
        text = raw.decode("utf-8")
        shape = _ProfileShape.model_validate(json.loads(text))
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError and ValidationError are ValueErrors
        detail = _describe(exc)
        raise PolicyError(f"seccomp profile {path} is not a valid profile: {detail}") from None
    bad = sorted({a for a in (shape.defaultAction, *(r.action for r in shape.syscalls)) if a not in _ACTIONS})
    if bad:
        raise PolicyError(f"seccomp profile {path}: unknown action(s) {', '.join(bad)}; allowed: {', '.join(_ACTIONS)}")
    return SeccompProfile(name, Path(path), text, hashlib.sha256(raw).hexdigest())


def _describe(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors())
    return str(exc)
