"""Kernel surface: syscalls the untrusted seccomp profile refuses, tried from inside real runs.

Each probe calls one syscall with arguments that succeed where it is allowed (checked once against
Docker's default profile while writing these) and exits 0 if it got through, 7 if it was refused:
``failed (exit_code)`` means *refused*. Under gVisor the OCI seccomp profile is not applied (runsc
needs ``--oci-seccomp`` for that); the sandbox's own kernel answers instead, so there a
``completed`` means "served by gVisor's kernel", never the host's - the rows say which.
"""

from __future__ import annotations

import platform

import pytest

from ._harness import attack, host_sentinels

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall numbers below are x86_64's")

PROBE = r"""
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
buf = ctypes.create_string_buffer(4096)
name = sys.argv[1]
if name == "io_uring_setup":
    r = libc.syscall(L(425), L(8), buf)
elif name == "ptrace_attach_init":
    r = libc.syscall(L(101), L(16), L(1), L(0), L(0))          # PTRACE_ATTACH to the container's init
elif name == "userfaultfd":
    r = libc.syscall(L(323), L(1))                               # UFFD_USER_MODE_ONLY: allowed unprivileged
elif name == "perf_event_open":
    ctypes.memmove(buf, (1).to_bytes(4, "little") + (128).to_bytes(4, "little"), 8)  # SOFTWARE, size 128
    buf[40] = 0x60                                               # exclude_kernel | exclude_hv
    r = libc.syscall(L(298), buf, L(0), L(-1), L(-1), L(0))
elif name == "keyctl":
    r = libc.syscall(L(250), L(0), L(-3), L(1))                  # KEYCTL_GET_KEYRING_ID, session, create
elif name == "add_key":
    r = libc.syscall(L(248), b"user", b"dad", b"x", L(1), L(-2))
elif name == "process_vm_readv":
    src = ctypes.create_string_buffer(b"secret")
    iov = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 6)
    riov = (ctypes.c_void_p * 2)(ctypes.addressof(src), 6)
    r = libc.syscall(L(310), L(os.getpid()), iov, L(1), riov, L(1), L(0))
elif name == "personality_uname26":
    r = libc.syscall(L(135), L(0x0020000))                       # UNAME26: pretend to be Linux 2.6
elif name == "clone3":
    r = libc.syscall(L(435), buf, L(88))
    if r == 0:
        os._exit(0)
elif name == "bpf":
    attr = (2).to_bytes(4, "little") + (4).to_bytes(4, "little") * 2 + (1).to_bytes(4, "little")  # ARRAY map
    ctypes.memmove(buf, attr, len(attr))
    r = libc.syscall(L(321), L(0), buf, L(72))
else:
    raise SystemExit(f"unknown probe {name}")
e = ctypes.get_errno()
print(name, "->", r, errno.errorcode.get(e, e) if r < 0 else "ok")
sys.exit(0 if r >= 0 else 7)
"""

REFUSED = {("failed", "exit_code")}
#: what gVisor's own kernel answers (the profile is not applied there; nothing reaches the host kernel)
GVISOR = {
    "io_uring_setup": {("completed", None)},
    "ptrace_attach_init": REFUSED,
    "userfaultfd": REFUSED,
    "perf_event_open": REFUSED,
    "personality_uname26": REFUSED,
    "clone3": REFUSED,
}


@pytest.fixture
def host(tmp_path):
    return host_sentinels(tmp_path)


@pytest.mark.parametrize("probe", ["io_uring_setup", "ptrace_attach_init", "userfaultfd", "perf_event_open",
                                   "keyctl", "add_key", "process_vm_readv", "personality_uname26", "clone3", "bpf"])
def test_refused_syscall(project, host, runtime, record_result, probe: str) -> None:
    """The untrusted profile refuses the syscall under runc; under gVisor it never reaches the host kernel."""
    expect = REFUSED if runtime == "runc" else GVISOR.get(probe, REFUSED | {("completed", None)})
    defends = "seccomp profile policies/seccomp/untrusted.json" if runtime == "runc" else "gVisor's kernel"
    got = attack(f"syscall-{probe.replace('_', '-')}", project, host, runtime, ["python3", "-c", PROBE, probe],
                 expect=expect, record=record_result,
                 defends="seccomp profile (runc); gVisor's own kernel (runsc)")
    assert got.metadata.model_dump().get("seccomp_hash"), defends


@pytest.mark.parametrize("probe", ["io_uring_setup", "ptrace_attach_init", "personality_uname26"])
def test_probe_gets_through_docker_default(project, host, docker_api, probe: str) -> None:
    """Control: under Docker's own profile these probes succeed, so a refusal above is the profile's doing.

    Except ptrace of PID 1: dad-init runs as root (another uid) and the run has no capability left,
    so the attach is refused even without the profile - a second layer, shown here."""
    expect = {("failed", "exit_code")} if probe == "ptrace_attach_init" else {("completed", None)}
    attack(f"control-{probe}", project, host, "runc", ["python3", "-c", PROBE, probe], expect=expect,
           record=[], defends="(control, not a defence)", seccomp="docker-default", timeout=4)
