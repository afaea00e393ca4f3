"""The seccomp profile of the untrusted policy, the policy's ``seccomp`` key, and how it reaches the engine."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dad_sandbox import IsolatedExecution, RunContext
from dad_sandbox.errors import PolicyError
from dad_sandbox.run import read_metadata
from dad_sandbox.sandbox import load_policy
from dad_sandbox.sandbox._ownership import RunUser
from dad_sandbox.sandbox._spec import build_spec
from dad_sandbox.sandbox.engine import ContainerSpec
from dad_sandbox.sandbox.engine._docker import _security_opt
from dad_sandbox.testing import FakeEngine

REPO = Path(__file__).resolve().parents[3]
PROFILE = REPO / "policies" / "seccomp" / "untrusted.json"


def rules() -> list[dict[str, object]]:
    return json.loads(PROFILE.read_text())["syscalls"]


def verdicts() -> dict[str, set[str]]:
    """syscall name -> the set of actions rules give it (argument-filtered rules included)."""
    out: dict[str, set[str]] = {}
    for rule in rules():
        for name in rule["names"]:  # type: ignore[union-attr]
            out.setdefault(name, set()).add(str(rule["action"]))
    return out


def test_profile_is_generated_from_the_script() -> None:
    """The committed profile is exactly what scripts/gen_seccomp.py renders (edit the script, not the JSON)."""
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_seccomp.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", ["io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace",
                                  "process_vm_readv", "process_vm_writev", "userfaultfd", "bpf", "perf_event_open",
                                  "keyctl", "add_key", "request_key", "unshare", "setns", "mount", "clone3",
                                  "open_by_handle_at", "kexec_load", "init_module"])
def test_dangerous_syscalls_are_refused(name: str) -> None:
    """Each refused syscall is only ever given SCMP_ACT_ERRNO, whatever capabilities a policy adds."""
    assert verdicts()[name] == {"SCMP_ACT_ERRNO"}


def test_everyday_syscalls_stay_allowed() -> None:
    """Threads, processes, pipes, files and sockets work: the profile is Docker's default minus a list."""
    v = verdicts()
    for name in ("read", "write", "openat", "pipe2", "execve", "wait4", "futex", "mmap", "clone", "socket",
                 "epoll_pwait", "faccessat2", "statx", "arch_prctl", "getrandom", "rseq"):
        assert v.get(name) == {"SCMP_ACT_ALLOW"}, name


def test_profile_has_no_conditional_rules() -> None:
    """No capability- or kernel-conditional rule: the profile means the same under any policy."""
    assert all("includes" not in r and "excludes" not in r for r in rules())
    clone = next(r for r in rules() if r["names"] == ["clone"])
    assert clone["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"  # type: ignore[index]
    assert clone["args"][0]["value"] & 0x10000000  # type: ignore[index]  # CLONE_NEWUSER masked


def test_policies_name_their_profiles() -> None:
    """untrusted and gvisor use the untrusted profile; default keeps the engine's own."""
    assert load_policy("untrusted").seccomp == "untrusted"
    assert load_policy("gvisor").seccomp == "untrusted"
    assert load_policy("default").seccomp == "docker-default"
    assert load_policy("default").seccomp_profile.text is None
    got = load_policy("untrusted").seccomp_profile
    assert got.sha256 == hashlib.sha256(PROFILE.read_bytes()).hexdigest()


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("value", "content", "hint"),
    [
        ("nope", None, "available: docker-default, untrusted"),
        ("bad name!", None, "docker-default"),
        ("./broken.json", "{not json", "not a valid profile"),
        ("./shape.json", '{"syscalls": []}', "defaultAction"),
        ("./names.json", '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]}',
         "syscalls.0.names"),
        ("./action.json", '{"defaultAction": "SCMP_ACT_MAYBE"}', "unknown action"),
        ("./missing.json", None, "cannot read"),
    ],
)
def test_bad_seccomp_values_are_explained(tmp_path: Path, value: str, content: str | None, hint: str) -> None:
    """An unknown profile, a bad file or a malformed profile fails at load, naming the key and what is wrong."""
    if content is not None:
        (tmp_path / value.removeprefix("./")).write_text(content)
    path = write(tmp_path, f'image = "x"\nseccomp = "{value}"\n')
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    msg = str(exc.value)
    assert str(path) in msg and "'seccomp'" in msg and hint in msg


def test_profile_beside_a_policy_file(tmp_path: Path) -> None:
    """A policy file's relative profile path and its own seccomp/ folder are found beside it."""
    (tmp_path / "seccomp").mkdir()
    profile = '{"defaultAction": "SCMP_ACT_ALLOW"}'
    (tmp_path / "seccomp" / "mine.json").write_text(profile)
    by_name = load_policy(write(tmp_path, 'image = "x"\nseccomp = "mine"\n', "a.toml"))
    by_path = load_policy(write(tmp_path, 'image = "x"\nseccomp = "seccomp/mine.json"\n', "b.toml"))
    for policy in (by_name, by_path):
        assert policy.seccomp_profile.text == profile
        assert Path(policy.seccomp).is_absolute()


def test_spec_and_docker_security_options(tmp_path: Path) -> None:
    """The untrusted spec carries the profile's JSON; Docker gets it as seccomp=<json> beside no-new-privileges."""
    ctx = RunContext("a", tmp_path)
    ctx.setup_run()
    spec = build_spec(ctx, load_policy("untrusted"), RunUser(1, 1, 1, 1), ["true"], deadline=0)
    assert spec.seccomp_profile == PROFILE.read_text()
    assert _security_opt(spec) == ["no-new-privileges", f"seccomp={PROFILE.read_text()}"]
    loose = build_spec(ctx, load_policy("default"), RunUser(1, 1, 1, 1), ["true"], deadline=0)
    assert loose.seccomp_profile is None and _security_opt(loose) == ["no-new-privileges"]
    assert _security_opt(ContainerSpec(image="x", command=(), labels={}, no_new_privileges=False)) is None


@pytest.mark.parametrize("policy", ["untrusted", "default"])
def test_metadata_records_the_profile_hash(tmp_path: Path, policy: str) -> None:
    """dad_metadata.json names the profile and its sha256 beside the policy hash (None for the engine's default)."""
    ctx = RunContext("a", tmp_path)
    ctx.setup_run()

    async def go() -> None:
        async with IsolatedExecution(ctx, load_policy(policy), engine=FakeEngine()) as execution:
            await execution.run_command(["print", "hi"])

    asyncio.run(go())
    md = read_metadata(ctx.run_dir).model_dump()
    assert md["policy_hash"] and md["seccomp_profile"] == load_policy(policy).seccomp
    expected = hashlib.sha256(PROFILE.read_bytes()).hexdigest() if policy == "untrusted" else None
    assert md["seccomp_hash"] == expected
