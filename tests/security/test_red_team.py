"""Hostile agents, each a real run under the untrusted policy (and under gVisor)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ._harness import attack, host_sentinels

PY = "python3"
COMPLETED = {("completed", None)}


@pytest.fixture
def host(tmp_path: Path) -> Path:
    return host_sentinels(tmp_path)


def py(code: str) -> list[str]:
    return [PY, "-c", code]


def test_fork_bomb(project, host, runtime, record_result) -> None:
    """A fork bomb hits the pids limit and is killed at its deadline; the host is unaffected."""
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    # Under gVisor the pids limit also counts gVisor's own threads: the bomb starves the sandbox,
    # which exits (code 2) - contained, and reported as failed rather than timed out.
    expect = {("timed_out", "deadline")} if runtime == "runc" else {("timed_out", "deadline"), ("failed", "exit_code")}
    attack("fork-bomb", project, host, runtime, py(code), expect=expect,
           record=record_result, defends="pids_limit + deadline kill", timeout=4)


def test_memory_bomb(project, host, runtime, record_result) -> None:
    """Allocating past the memory limit ends the run oom_killed."""
    expect = {("oom_killed", "oom")} if runtime == "runc" else {("oom_killed", "oom"), ("crashed", "signal:SIGKILL")}
    attack("memory-bomb", project, host, runtime, py("x = bytearray(4 << 30)"), expect=expect,
           record=record_result, defends="memory limit (swap disabled)", memory="128m")


def test_memory_bomb_in_child(project, host, runtime, record_result) -> None:
    """A child OOM-killed while PID 1 survives and exits 0 is still reported (oom:child)."""
    code = "import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'x = bytearray(4 << 30)'])\n"
    # Under gVisor the kernel's OOM killer sees the sandbox's own processes, not the run's: it may
    # kill the Sentry (the whole run dies by SIGKILL, measured 1 in 3) or gVisor may kill only the
    # child inside (PID 1 then exits 0 and the engine may not flag OOM): each was seen here.
    expect = ({("oom_killed", "oom:child")} if runtime == "runc" else
              {("oom_killed", "oom:child"), ("oom_killed", "oom"), ("crashed", "signal:SIGKILL"), ("completed", None)})
    attack("memory-bomb-child", project, host, runtime, py(code), expect=expect, record=record_result,
           defends="memory limit; OOMKilled read before removal", memory="128m")


def test_cpu_spin_past_deadline(project, host, runtime, record_result) -> None:
    """A busy loop is killed at the wall-clock deadline."""
    attack("cpu-spin", project, host, runtime, py("while True: pass"), expect={("timed_out", "deadline")},
           record=record_result, defends="cpus limit + deadline kill", timeout=2)


def test_sigterm_trapped(project, host, runtime, record_result) -> None:
    """Ignoring SIGTERM does not help: the supervisor kills with SIGKILL."""
    attack("sigterm-ignored", project, host, runtime, ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"],
           expect={("timed_out", "deadline")}, record=record_result, defends="SIGKILL at the deadline", timeout=2)


def test_zombies_and_orphans(project, host, runtime, record_result) -> None:
    """Orphaned and zombie children die with the container; nothing survives on the host."""
    code = (
        "import os, time\n"
        "for _ in range(5):\n"
        "    if os.fork() == 0:\n"
        "        if os.fork() == 0:\n"
        "            os.execvp('sleep', ['sleep', '4242'])\n"
        "        os._exit(0)\n"
        "for _ in range(5):\n"
        "    if os.fork() == 0:\n"
        "        os._exit(0)\n"
        "time.sleep(0.5)\n"
    )
    attack("zombies-orphans", project, host, runtime, py(code), expect=COMPLETED, record=record_result,
           defends="init process + container removal")
    left = subprocess.run(["pgrep", "-f", "sleep 4242"], capture_output=True, text=True).stdout.split()
    assert left == [], f"orphans survived on the host: {left}"


def test_disk_fill_run_dir(project, host, runtime, record_result) -> None:
    """Filling the run dir past the quota stops the run (failed, disk_quota)."""
    attack("disk-fill-run-dir", project, host, runtime,
           ["sh", "-c", "i=0; while [ $i -lt 40 ]; do head -c 10000000 /dev/zero > f$i; i=$((i+1)); done; sleep 10"],
           expect={("failed", "disk_quota")}, record=record_result, defends="run-dir quota watched by the supervisor",
           disk_quota="64m")


def test_disk_fill_tmp(project, host, runtime, record_result) -> None:
    """/tmp is a size-capped tmpfs: filling it fails inside the run, nothing reaches the host disk."""
    attack("disk-fill-tmp", project, host, runtime, ["sh", "-c", "head -c 200000000 /dev/zero > /tmp/big"],
           expect={("failed", "exit_code")}, record=record_result, defends="tmpfs size cap")


@pytest.mark.slow
def test_output_flood(project, host, runtime, record_result) -> None:
    """1 GiB of output: the run completes, output is capped and marked truncated."""
    code = "import sys\nline = b'x' * 1023 + b'\\n'\nw = sys.stdout.buffer.write\nfor _ in range(1 << 20): w(line)\n"
    got = attack("output-flood-1gib", project, host, runtime, py(code), expect=COMPLETED, record=record_result,
                 defends="output cap, streamed to disk, log driver none")
    assert got.metadata.output.truncated and got.metadata.output.bytes_total == 1 << 30


def test_huge_json_line(project, host, runtime, record_result) -> None:
    """A single 100 MB line in the runner's trace.jsonl is quarantined, never loaded whole."""
    code = "with open('.runner/trace.jsonl', 'a') as fh:\n    fh.write('{\"x\": \"' + 'a' * (100 << 20) + '\"}\\n')\n"
    got = attack("huge-json-line", project, host, runtime, py(code),
                 expect=COMPLETED, record=record_result, defends="bounded, line-capped trace collection",
                 memory="1g", max_file_size="1g")
    assert got.metadata.collection["trace.jsonl"]["bad_lines"] == 1


def test_invalid_utf8_flood(project, host, runtime, record_result) -> None:
    """Invalid UTF-8 in output and traces never breaks collection."""
    code = (
        "import os, sys\n"
        "for _ in range(20000): sys.stdout.buffer.write(os.urandom(64) + b'\\n')\n"
        "with open('.runner/trace.jsonl', 'ab') as fh:\n"
        "    for _ in range(20000): fh.write(os.urandom(64) + b'\\n')\n"
    )
    got = attack("invalid-utf8-flood", project, host, runtime, py(code),
                 expect=COMPLETED, record=record_result, defends="replacement decoding, quarantine of bad lines")
    assert got.metadata.output.lines_kept > 0


def test_symlinked_metadata(project, host, runtime, record_result) -> None:
    """A symlink at .trace/dad_metadata.json never makes the host write to its target."""
    target = host / "secret.txt"
    attack("symlink-metadata", project, host, runtime,
           ["sh", "-c", f"ln -sf {target} .trace/dad_metadata.json; ln -sf {target} .trace/trace.jsonl; true"],
           expect=COMPLETED, record=record_result, defends=".trace/ hidden under a read-only mount; O_NOFOLLOW writes",
           user="root")


def test_trace_dir_replaced(project, host, runtime, record_result) -> None:
    """.trace replaced by a symlink to a host dir: impossible (a mount point), nothing is written there."""
    attack("trace-dir-symlink", project, host, runtime,
           ["sh", "-c", f"mv .trace .trace_old 2>/dev/null; ln -s {host / 'dir'} .trace 2>/dev/null; true"],
           expect=COMPLETED, record=record_result, defends=".trace/ is a read-only mount point in the container",
           user="root")


def test_fifo_trace_file(project, host, runtime, record_result) -> None:
    """A FIFO where the runner's trace file should be is refused without blocking."""
    got = attack("fifo-trace-file", project, host, runtime,
                 ["sh", "-c", "mkfifo .runner/trace.jsonl .runner/runner_report.json; true"],
                 expect=COMPLETED, record=record_result, defends="O_NONBLOCK open + regular-file check",
                 user="root")
    if runtime == "runc":  # gVisor refuses to create FIFOs on bind mounts (EINVAL): nothing to refuse
        assert got.metadata.collection["trace.jsonl"]["refused"]


def test_hard_links_outside(project, host, runtime, record_result) -> None:
    """Hard links to files outside the run dir cannot be made (other mounts, protected_hardlinks)."""
    script = "ln /dad/project/sentinel.txt p 2>/dev/null && exit 0; ln /etc/passwd pw 2>/dev/null && exit 0; exit 7"
    got = attack("hard-link-outside", project, host, runtime, ["sh", "-c", script], expect={("failed", "exit_code")},
                 record=record_result, defends="separate mounts; non-root user")
    assert got.metadata.exit_code == 7


def test_write_read_only_project(project, host, runtime, record_result) -> None:
    """The project is mounted read-only."""
    script = "echo pwned > /dad/project/sentinel.txt 2>/dev/null && exit 0; touch /dad/project/new 2>/dev/null && exit 0; exit 7"
    attack("write-project", project, host, runtime, ["sh", "-c", script], expect={("failed", "exit_code")},
           record=record_result, defends="read-only bind mount")


def test_setuid_escalation(project, host, runtime, record_result) -> None:
    """setuid binaries give no privileges (no-new-privileges, all capabilities dropped)."""
    script = (
        "for b in $(find / -xdev -perm -4000 -type f 2>/dev/null); do echo suid $b; done; "
        "su -c id root </dev/null 2>/dev/null && exit 0; "
        "mount -t tmpfs t /tmp 2>/dev/null && exit 0; "
        # gVisor's /proc has no NoNewPrivs line; where the line exists it must say 1
        "grep -q '^NoNewPrivs' /proc/self/status && ! grep -q '^NoNewPrivs:[[:space:]]*1' /proc/self/status && exit 0; "
        "grep -q '^CapEff:[[:space:]]*0000000000000000' /proc/self/status || exit 0; exit 7"
    )
    attack("setuid-escalation", project, host, runtime, ["sh", "-c", script], expect={("failed", "exit_code")},
           record=record_result, defends="no-new-privileges, cap_drop ALL, non-root")


def test_unshare_and_mount(project, host, runtime, record_result) -> None:
    """New namespaces and mounts are refused."""
    script = ("unshare -r id 2>/dev/null && exit 0; unshare -m true 2>/dev/null && exit 0; "
              "mount -t proc p /tmp 2>/dev/null && exit 0; exit 7")
    # gVisor implements user namespaces inside its own user-space kernel: `unshare -r` succeeds
    # there but gives nothing on the host (the host checks below still hold).
    expect = {("failed", "exit_code")} if runtime == "runc" else {("failed", "exit_code"), ("completed", None)}
    attack("unshare-mount", project, host, runtime, ["sh", "-c", script], expect=expect,
           record=record_result, defends="seccomp default profile, no capabilities (runc); gVisor kernel (runsc)")


def test_network_egress(project, host, runtime, record_result) -> None:
    """There is no route out: connecting to a non-loopback address fails inside (UDP connect sends nothing)."""
    code = (
        "import os, socket, sys\n"
        "assert sorted(os.listdir('/sys/class/net')) == ['lo'], os.listdir('/sys/class/net')\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "try:\n"
        "    s.connect(('192.0.2.1', 9))\n"
        "except OSError as e:\n"
        "    print('no route:', e)\n"
        "    sys.exit(7)\n"
        "sys.exit(0)\n"
    )
    got = attack("network-egress", project, host, runtime, py(code), expect={("failed", "exit_code")},
                 record=record_result, defends="network none (only lo)")
    assert got.metadata.exit_code == 7


def test_host_environment_secrets(project, host, runtime, record_result, monkeypatch) -> None:
    """Host environment variables never reach the run unless the policy names them."""
    monkeypatch.setenv("DAD_TEST_API_KEY", "sk-host-secret")
    script = "env | grep -q sk-host-secret && exit 0; grep -qa sk-host-secret /proc/1/environ && exit 0; exit 7"
    attack("host-env-secrets", project, host, runtime, ["sh", "-c", script], expect={("failed", "exit_code")},
           record=record_result, defends="environment allow-list (env_allow)")


def test_dev_shm_abuse(project, host, runtime, record_result) -> None:
    """/dev/shm stays small (64 MiB) and counts against the memory limit."""
    # The 64 MiB size cap stops the write (ENOSPC) long before the memory limit: `head` fails, the run too.
    got = attack("dev-shm-fill", project, host, runtime, ["sh", "-c", "head -c 300000000 /dev/zero > /dev/shm/fill"],
                 expect={("failed", "exit_code")}, record=record_result, defends="64 MiB shm, memory limit")
    assert got.metadata.exit_code == 1


def test_kill_pid1(project, host, runtime, record_result) -> None:
    """The run cannot signal PID 1 (dad-init stays root while the run has another uid and no CAP_KILL):
    both kills fail with EPERM on each runtime, and the run goes on to complete."""
    script = "kill -9 1 2>/dev/null && exit 3; kill -TERM 1 2>/dev/null && exit 4; sleep 2; exit 0"
    attack("kill-pid1", project, host, runtime, ["sh", "-c", script], expect=COMPLETED,
           record=record_result, defends="dad-init as PID 1 under another uid; kill(2) needs a matching uid", timeout=20)


def test_other_runs_are_invisible(project, host, runtime, record_result) -> None:
    """A run sees only its own run dir: no other run, no run root."""
    script = 'for d in /dad/runs/* /dad/runs/.[!.]*; do [ -e "$d" ] && [ "$d" != "$PWD" ] && exit 0; done; exit 7'
    attack("other-runs", project, host, runtime, ["sh", "-c", script], expect={("failed", "exit_code")},
           record=record_result, defends="only the run dir is mounted")


def test_huge_runner_report(project, host, runtime, record_result) -> None:
    """A forged, oversized runner report is ignored (bounded read), never trusted or loaded whole."""
    got = attack("forged-runner-report", project, host, runtime,
                 ["sh", "-c", "head -c 50000000 /dev/zero | tr '\\0' 'x' > .runner/runner_report.json"],
                 expect=COMPLETED, record=record_result, defends="bounded reads of container files")
    assert json.loads((got.ctx.trace_dir / "dad_metadata.json").read_text())["status"] == "completed"
    assert os.getuid() == os.stat(got.ctx.run_dir).st_uid
