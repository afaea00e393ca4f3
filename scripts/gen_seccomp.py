"""Generate policies/seccomp/untrusted.json, the seccomp profile of the `untrusted` policy.

Why a generator: a seccomp profile is ~400 syscall names in JSON, which no one can review as a
diff. Here the profile is a few named groups, each with the reason it is allowed or refused, and
the JSON is derived from them. Edit this file, then run

    python scripts/gen_seccomp.py            (writes the profile)
    python scripts/gen_seccomp.py --check    (exit 1 if the committed profile is stale; a unit test runs it)

Semantics: Docker's default profile as it applies to a container WITHOUT capabilities (that is
what `untrusted` runs: `cap_drop = ["ALL"]`, no-new-privileges), with a list of syscalls refused
on top. Two differences in kind from Docker's profile:

* no capability-conditional rules at all: even a policy that adds CAP_SYS_ADMIN back does not get
  mount, unshare, bpf or perf_event_open through this profile (use "docker-default" for that);
* no kernel-version-conditional rules: ptrace and process_vm_* are refused on every kernel.

Format: the JSON that `docker run --security-opt seccomp=<file>` takes (moby's `types.Seccomp`):
`defaultAction`, `defaultErrnoRet`, `archMap`, and `syscalls` rules of `names`, `action`, optional
`errnoRet`, `args` (index, value, op) and `comment`.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "policies" / "seccomp" / "untrusted.json"

# ---------------------------------------------------------------------------------- allowed
# Grouped by what programs use them for. Names that do not exist on the host's architecture
# (the *32 and *64 variants of 32-bit ABIs) are ignored by the engine when it compiles the filter.
ALLOWED: dict[str, list[str]] = {
    "file descriptors and files": """
        access faccessat faccessat2 chdir fchdir getcwd chmod fchmod fchmodat chown chown32 fchown fchown32
        fchownat lchown lchown32 close close_range creat open openat openat2 dup dup2 dup3 fcntl fcntl64
        flock fsync fdatasync sync syncfs sync_file_range fallocate ftruncate ftruncate64 truncate truncate64
        getdents getdents64 link linkat symlink symlinkat readlink readlinkat rename renameat renameat2
        mkdir mkdirat mknod mknodat rmdir unlink unlinkat umask utime utimes utimensat utimensat_time64
        futimesat stat stat64 fstat fstat64 fstatat64 newfstatat lstat lstat64 statx statfs statfs64
        fstatfs fstatfs64 lseek _llseek fadvise64 fadvise64_64 readahead
    """,
    "reading and writing": """
        pipe pipe2 read readv pread64 preadv preadv2 write writev pwrite64 pwritev pwritev2 sendfile sendfile64
        splice tee vmsplice copy_file_range
    """,
    "extended attributes": """
        getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr setxattr lsetxattr fsetxattr
        removexattr lremovexattr fremovexattr
    """,
    "polling and events": """
        select _newselect pselect6 pselect6_time64 poll ppoll ppoll_time64 epoll_create epoll_create1
        epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old epoll_pwait epoll_pwait2 eventfd eventfd2
        inotify_init inotify_init1 inotify_add_watch inotify_rm_watch signalfd signalfd4
        timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64
    """,
    "asynchronous I/O (the old Linux AIO, not io_uring)": """
        io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents io_pgetevents_time64
    """,
    "memory": """
        brk mmap mmap2 munmap mremap mprotect madvise mincore msync mlock mlock2 mlockall munlock munlockall
        membarrier memfd_create memfd_secret pkey_alloc pkey_free pkey_mprotect
    """,
    "processes and threads": """
        fork vfork execve execveat exit exit_group wait4 waitid waitpid getpid getppid gettid
        getpgid setpgid getpgrp getsid setsid set_tid_address set_robust_list get_robust_list rseq
        futex futex_time64 futex_waitv arch_prctl get_thread_area set_thread_area prctl seccomp
        capget capset getrlimit setrlimit ugetrlimit prlimit64 getrusage times getpriority setpriority
        ioprio_get ioprio_set pidfd_open pidfd_send_signal restart_syscall uname sysinfo getcpu getrandom
        landlock_create_ruleset landlock_add_rule landlock_restrict_self
    """,
    "credentials (changing them needs capabilities, which the run has none of)": """
        getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32 getresuid getresuid32
        getresgid getresgid32 getgroups getgroups32 setuid setuid32 setgid setgid32 setreuid setreuid32
        setregid setregid32 setresuid setresuid32 setresgid setresgid32 setfsuid setfsuid32 setfsgid
        setfsgid32 setgroups setgroups32
    """,
    "signals": """
        kill tkill tgkill rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigsuspend
        rt_sigqueueinfo rt_tgsigqueueinfo rt_sigtimedwait rt_sigtimedwait_time64 sigaltstack sigreturn
        sigprocmask pause alarm getitimer setitimer
    """,
    "time": """
        time gettimeofday clock_gettime clock_gettime64 clock_getres clock_getres_time64 clock_nanosleep
        clock_nanosleep_time64 nanosleep adjtimex clock_adjtime clock_adjtime64 timer_create timer_delete
        timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64
    """,
    "scheduling": """
        sched_yield sched_getaffinity sched_setaffinity sched_getattr sched_setattr sched_getparam
        sched_setparam sched_getscheduler sched_setscheduler sched_get_priority_max sched_get_priority_min
        sched_rr_get_interval sched_rr_get_interval_time64
    """,
    "sockets (socket() itself is argument-filtered below)": """
        socketpair bind listen accept accept4 connect getsockname getpeername getsockopt setsockopt
        send sendto sendmsg sendmmsg recv recvfrom recvmsg recvmmsg recvmmsg_time64 shutdown socketcall
    """,
    "System V and POSIX IPC (inside the container's own IPC namespace)": """
        ipc msgget msgctl msgsnd msgrcv semget semctl semop semtimedop semtimedop_time64 shmget shmctl
        shmat shmdt mq_open mq_unlink mq_timedsend mq_timedsend_time64 mq_timedreceive
        mq_timedreceive_time64 mq_notify mq_getsetattr
    """,
    "terminal and device control": """
        ioctl
    """,
}

# ---------------------------------------------------------------------------------- refused
# Refused explicitly (most of them are also absent from the allow-list, so the default action
# would refuse them; naming them documents the decision and lets us pick the errno).
REFUSED: list[tuple[str, int, str]] = [
    ("clone3", errno.ENOSYS,
     "its flags sit in memory where seccomp cannot check them for namespace flags; ENOSYS makes "
     "the C library fall back to clone(), which is checked below (Docker does the same)"),
    ("io_uring_setup io_uring_enter io_uring_register", errno.ENOSYS,
     "io_uring: a large, fast-moving kernel surface with a long list of privilege-escalation bugs; "
     "ENOSYS so that libraries fall back to epoll or threads as on an old kernel"),
    ("ptrace process_vm_readv process_vm_writev process_madvise process_mrelease kcmp pidfd_getfd", errno.EPERM,
     "inspecting or changing other processes: PTRACE_ATTACH to the container's init could stop it"),
    ("userfaultfd", errno.EPERM, "stalls kernel page faults at will: the classic race-widening tool of exploits"),
    ("bpf perf_event_open", errno.EPERM, "eBPF programs and perf events: kernel attack surface and side channels"),
    ("keyctl add_key request_key", errno.EPERM, "the kernel keyring is not namespaced"),
    ("modify_ldt", errno.EPERM, "16-bit segments: only old emulators need it, and it has carried kernel bugs"),
    ("name_to_handle_at open_by_handle_at", errno.EPERM, "file handles can name files outside the mounts"),
    ("remap_file_pages fanotify_init fanotify_mark lookup_dcookie", errno.EPERM,
     "obsolete or privileged interfaces no sandboxed program needs"),
    ("mount umount umount2 pivot_root chroot unshare setns fsopen fsconfig fsmount fspick move_mount "
     "open_tree mount_setattr quotactl quotactl_fd", errno.EPERM,
     "namespaces and mounts: refused whatever capabilities a policy adds back"),
    ("mbind set_mempolicy get_mempolicy migrate_pages move_pages set_mempolicy_home_node", errno.EPERM,
     "NUMA placement: host memory policy"),
    ("init_module finit_module delete_module kexec_load kexec_file_load reboot swapon swapoff acct "
     "syslog sethostname setdomainname settimeofday stime clock_settime clock_settime64 iopl ioperm "
     "vhangup", errno.EPERM, "host administration: never a sandboxed program's business"),
]

# clone(2) may make threads and processes, but not new namespaces: CLONE_NEWNS | NEWCGROUP | NEWUTS |
# NEWIPC | NEWUSER | NEWPID | NEWNET must all be clear (the mask Docker uses without CAP_SYS_ADMIN).
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
# personality(2): PER_LINUX (0) and the query value 0xffffffff only. Docker also allows
# PER_LINUX32 and UNAME26 (a fake kernel version, once used to reach old code paths).
PERSONALITY_ALLOWED = (0x0, 0xFFFFFFFF)
AF_VSOCK = 40  # sockets to the hypervisor: refused, as Docker does

ARCH_MAP = [
    {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
]


def _names(text: str) -> list[str]:
    return text.split()


def build() -> dict[str, Any]:
    """The profile as a JSON-ready dict."""
    allowed = sorted({n for group in ALLOWED.values() for n in _names(group)})
    refused = {n for spec, _, _ in REFUSED for n in _names(spec)}
    overlap = refused & set(allowed)
    if overlap:
        raise SystemExit(f"both allowed and refused: {sorted(overlap)}")
    rules: list[dict[str, Any]] = [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
    rules.append({
        "names": ["clone"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        "comment": "threads and processes, no new namespaces",
    })
    rules.append({
        "names": ["socket"], "action": "SCMP_ACT_ALLOW",
        "args": [{"index": 0, "value": AF_VSOCK, "valueTwo": 0, "op": "SCMP_CMP_NE"}],
        "comment": "every address family but AF_VSOCK",
    })
    for value in PERSONALITY_ALLOWED:
        rules.append({
            "names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": value, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
            "comment": "PER_LINUX and the query only",
        })
    for spec, errno_ret, why in REFUSED:
        rules.append({"names": sorted(_names(spec)), "action": "SCMP_ACT_ERRNO", "errnoRet": errno_ret,
                      "comment": why})
    return {
        "comment": "dad-sandbox untrusted profile; generated by scripts/gen_seccomp.py - edit that, not this",
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.EPERM,
        "archMap": ARCH_MAP,
        "syscalls": rules,
    }


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed profile differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python scripts/gen_seccomp.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
