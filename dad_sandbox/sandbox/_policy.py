"""Policies: the resource limits and isolation settings of a run, loaded from TOML files.

A policy is a frozen pydantic model with ``extra="forbid"``, so a typo in a file fails loudly with
the file, the key and the allowed values instead of being silently ignored. Built-in policies live
in the repository's ``policies/`` folder (shipped inside the wheel as ``_builtin_policies``).
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from dad_sandbox._version import __version__
from dad_sandbox.errors import PolicyError
from dad_sandbox.sandbox import _seccomp
from dad_sandbox.sandbox._egress_rules import parse_rule
from dad_sandbox.sandbox._units import parse_duration, parse_size


def _unlimited(parse: Any) -> Any:
    """Accept the word "unlimited" as None: a limit is lifted only by saying so."""
    def check(value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "unlimited":
            return None
        return parse(value) if value is not None else None
    return check


Bytes = Annotated[int, BeforeValidator(parse_size)]
Seconds = Annotated[float, BeforeValidator(parse_duration)]
LimitBytes = Annotated[int | None, BeforeValidator(_unlimited(parse_size))]
LimitCount = Annotated[int | None, BeforeValidator(_unlimited(lambda v: v))]
LimitCpus = Annotated[float | None, BeforeValidator(_unlimited(lambda v: v))]

#: Linux capability names Docker accepts (without the CAP_ prefix), plus "ALL".
CAPABILITIES = frozenset(
    ["ALL", "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE", "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE", "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYSLOG", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT", "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "WAKE_ALARM"]
)
_USER_RE = re.compile(r"^(auto|root|\d+(:\d+)?)$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEMENT_RE = re.compile(r"^[A-Za-z0-9_.-]+ ?(==|!=) ?[A-Za-z0-9_.:/-]+$")


class Policy(BaseModel):
    """How one run is isolated and limited.

    Every default is the hardened one (the ``untrusted`` values): a policy file loosens a setting
    only by saying so - ``network = "bridge"``, ``cap_drop = []``, ``cap_add = ["NET_BIND_SERVICE"]``
    one capability at a time, ``memory = "unlimited"``, ``read_only_root = false``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"
    description: str = ""
    image: str = Field(description="image reference; '{version}' is replaced by the dad-sandbox version")
    runtime: str = Field("runc", pattern=r"^[A-Za-z0-9_.-]+$", description="OCI runtime, e.g. runc or runsc")
    cpus: LimitCpus = Field(1.0, gt=0, le=1024, description="CPU limit in cores, or 'unlimited'")
    memory: LimitBytes = Field(512 << 20, gt=0, description="memory limit (swap disabled), or 'unlimited'")
    pids_limit: LimitCount = Field(128, gt=0, description="processes/threads in the container, or 'unlimited'")
    timeout: Seconds = Field(300.0, gt=0, description="wall-clock deadline of a run")
    network: Literal["none", "bridge", "host", "allowlist"] = Field(
        "none", description="'none' (only lo), 'allowlist' (only lo, plus a host-side proxy to egress_allow), or a Docker network"
    )
    egress_allow: list[str] = Field(
        default_factory=list, description="with network='allowlist': hosts the run may reach, 'host[:port]', '*.domain'"
    )
    egress_deny: list[str] = Field(default_factory=list, description="hosts refused even when egress_allow matches")
    egress_max_connections: LimitCount = Field(256, gt=0, description="proxy connections a run may open, or 'unlimited'")
    egress_max_bytes: LimitBytes = Field(1 << 30, gt=0, description="bytes a run may move through the proxy, both ways")
    user: str = Field("auto", description="'auto' (host uid, or 65534 when the host is root), 'root', or 'UID[:GID]'")
    read_only_root: bool = True
    tmpfs: dict[str, Bytes] = Field(default_factory=lambda: {"/tmp": 64 << 20}, description="mount point -> size")
    cap_drop: list[str] = Field(default_factory=lambda: ["ALL"])
    cap_add: list[str] = Field(default_factory=list, description="capabilities added back, one by one by name")
    no_new_privileges: bool = True
    seccomp: str = Field(
        "untrusted",
        description="seccomp profile: a name in policies/seccomp/, a path to a .json profile, or 'docker-default'",
    )
    init: bool = Field(True, description="run an init process as PID 1 (reaps zombies, forwards signals)")
    env: dict[str, str] = Field(default_factory=dict, description="environment variables set for the run")
    env_allow: list[str] = Field(default_factory=list, description="host variables passed through, by name")
    output_limit: Bytes = Field(16 << 20, ge=0, description="stdout+stderr bytes kept in logs.jsonl")
    disk_quota: LimitBytes = Field(1 << 30, gt=0, description="bytes the run dir may hold, or 'unlimited'")
    max_file_size: LimitBytes = Field(256 << 20, gt=0, description="largest file a process may write, or 'unlimited'")
    max_files: LimitCount = Field(
        100_000, gt=0, description="entries (files, folders, links) the run dir may hold, or 'unlimited'"
    )
    metrics_interval: Seconds = Field(1.0, ge=0, description="seconds between resource samples; 0 disables")
    placement: list[str] = Field(
        default_factory=list,
        description="Swarm engine: placement constraints, e.g. 'node.labels.sandbox==true' (a single engine ignores them)",
    )

    @field_validator("user")
    @classmethod
    def _check_user(cls, value: str) -> str:
        if not _USER_RE.match(value):
            raise ValueError("must be 'auto', 'root' or 'UID[:GID]' with numeric ids")
        return value

    @field_validator("cap_drop", "cap_add")
    @classmethod
    def _check_caps(cls, value: list[str]) -> list[str]:
        out = []
        for cap in value:
            name = cap.upper().removeprefix("CAP_")
            if name not in CAPABILITIES:
                raise ValueError(f"unknown capability {cap!r}; allowed: {', '.join(sorted(CAPABILITIES))}")
            out.append(name)
        return out

    @field_validator("seccomp")
    @classmethod
    def _check_seccomp(cls, value: str) -> str:
        _seccomp.check_name(value)
        _seccomp.resolve(value, builtin_policy_dirs())  # a missing or malformed profile fails here, readably
        return value

    @field_validator("tmpfs")
    @classmethod
    def _check_tmpfs(cls, value: dict[str, int]) -> dict[str, int]:
        for path, size in value.items():
            if not path.startswith("/") or ".." in path.split("/"):
                raise ValueError(f"tmpfs mount point {path!r} must be an absolute path without '..'")
            if size <= 0:
                raise ValueError(f"tmpfs {path!r} needs a size > 0 (tmpfs pages count against memory)")
        return value

    @field_validator("placement")
    @classmethod
    def _check_placement(cls, value: list[str]) -> list[str]:
        for rule in value:
            if not _PLACEMENT_RE.match(rule):
                raise ValueError(f"placement constraint {rule!r} must look like 'node.labels.sandbox==true' (== or !=)")
        return value

    @field_validator("env", "env_allow")
    @classmethod
    def _check_env(cls, value: Any) -> Any:
        for name in value:
            if not _ENV_NAME_RE.match(name):
                raise ValueError(f"environment variable name {name!r} is not valid")
        return value

    @field_validator("egress_allow", "egress_deny")
    @classmethod
    def _check_egress_rules(cls, value: list[str]) -> list[str]:
        return [str(parse_rule(rule)) for rule in value]  # raises ValueError with the rule and the fix

    @model_validator(mode="after")
    def _check_egress(self) -> Policy:
        if self.network == "allowlist" and not self.egress_allow:
            raise ValueError("network = 'allowlist' needs egress_allow, e.g. egress_allow = ['pypi.org', '*.example.com:443']")
        if self.network != "allowlist" and (self.egress_allow or self.egress_deny):
            raise ValueError(
                f"egress_allow/egress_deny apply only with network = 'allowlist' (this policy has network = {self.network!r})"
            )
        return self

    @property
    def image_ref(self) -> str:
        """The image with ``{version}`` filled in (see :func:`runner_tag`)."""
        return self.image.replace("{version}", runner_tag())

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON of the policy: same settings, same hash."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    @property
    def seccomp_profile(self) -> _seccomp.SeccompProfile:
        """The profile ``seccomp`` names, read and checked (cached while the file is unchanged).

        Raises:
            PolicyError: the profile went missing or became invalid since the policy was loaded.
        """
        return _seccomp.resolve(self.seccomp, builtin_policy_dirs())

    def with_overrides(self, **changes: Any) -> Policy:
        """A validated copy with some fields changed (e.g. ``timeout`` from the CLI)."""
        return _validate(self.model_dump() | changes, source="overrides")


def runner_tag() -> str:
    """The tag ``{version}`` stands for: the dad-sandbox version, or ``$DAD_SANDBOX_RUNNER_TAG``.

    Why the override: ``images/build.sh`` also tags each build by its inputs
    (``<version>-<hash>``) and writes that tag to ``build/runner-tag``; ``make test`` passes it here
    so that two checkouts testing on one engine each use the image built from their own sources.
    """
    return os.environ.get("DAD_SANDBOX_RUNNER_TAG") or __version__


def _format_errors(exc: ValidationError, source: str) -> str:
    allowed = ", ".join(Policy.model_fields)
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  key {key!r}: unknown key; allowed keys: {allowed}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  key {key!r}: {msg} (got {err.get('input')!r})")
    return f"invalid policy {source}:\n" + "\n".join(lines)


def _validate(data: dict[str, Any], *, source: str) -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_format_errors(exc, source)) from None


def builtin_policy_dirs() -> list[Path]:
    """Folders searched for named policies, in order."""
    dirs: list[Path] = []
    env = os.environ.get("DAD_SANDBOX_POLICY_PATH")
    if env:
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    package = Path(__file__).resolve().parent.parent
    dirs.append(package / "_builtin_policies")  # installed wheel
    dirs.append(package.parent / "policies")  # source checkout
    return [d for d in dirs if d.is_dir()]


def available_policies() -> list[str]:
    """Names of every policy found in the search folders."""
    return sorted({p.stem for d in builtin_policy_dirs() for p in d.glob("*.toml")})


def load_policy_file(path: Path) -> Policy:
    """Load and validate one policy file.

    Raises:
        PolicyError: unreadable, not TOML, or not a valid policy; the message names the file and key.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {path} is not valid TOML: {exc}") from exc
    data.setdefault("name", path.stem)
    seccomp = data.get("seccomp")
    if isinstance(seccomp, str):
        data["seccomp"] = _local_profile(path.parent, seccomp)
    return _validate(data, source=f"file {path}")


def _local_profile(folder: Path, value: str) -> str:
    """A policy file's own profile: a relative path is relative to the policy file, and a name is
    looked up in the ``seccomp/`` folder beside it before the built-in ones."""
    if value == _seccomp.DOCKER_DEFAULT:
        return value
    candidate = Path(value).expanduser()
    if "/" in value or value.endswith(".json"):
        return value if candidate.is_absolute() else str(folder / candidate)
    beside = folder / _seccomp.PROFILE_DIR / f"{value}.json"
    return str(beside) if beside.is_file() and folder.resolve() not in _builtin_resolved() else value


def _builtin_resolved() -> set[Path]:
    return {d.resolve() for d in builtin_policy_dirs()}


def load_policy(policy: str | Path | Policy) -> Policy:
    """A policy by name (``untrusted``), by path (``./my.toml``), or as given.

    Raises:
        PolicyError: not found (the message lists the available names) or not valid.
    """
    if isinstance(policy, Policy):
        return policy
    text = str(policy)
    if isinstance(policy, Path) or "/" in text or text.endswith(".toml"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise PolicyError(f"policy file {path} does not exist")
        return load_policy_file(path)
    for folder in builtin_policy_dirs():
        candidate = folder / f"{text}.toml"
        if candidate.is_file():
            return load_policy_file(candidate)
    names = ", ".join(available_policies()) or "(none found)"
    raise PolicyError(f"no policy named {text!r}; available: {names}; or pass a path to a .toml file")
