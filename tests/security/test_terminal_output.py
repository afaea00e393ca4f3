"""Terminal escape sequences printed by a run never reach the user's terminal raw.

``dad-sandbox exec`` and ``runs logs`` run on a real pseudo-terminal here, so the CLI takes its
terminal path. What they print must show the run's control sequences escaped (screen clearing,
OSC 52 clipboard writes, window titles, 8-bit CSI, DCS), while ``--json`` keeps the bytes intact
(JSON escapes them by itself). The CLI's own colours may use escapes; the run's may not.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

CLI = [sys.executable, "-m", "dad_sandbox.cli"]

#: (name, what the run prints) - each one does something to a terminal if printed raw
SEQUENCES = [
    ("clear-screen", "\x1b[2J\x1b[H"),
    ("osc52-clipboard", "\x1b]52;c;cm0gLXJmIH4K\x07"),
    ("window-title", "\x1b]0;pwned\x1b\\"),
    ("c1-csi", "\u009b31m"),
    ("dcs", "\x1bPq#0;2;0;0;0\x1b\\"),
]
RAW = [seq.encode() for _, seq in SEQUENCES]
SCRIPT = "import sys\n" + "".join(
    f"sys.stdout.write('before-{name}' + {seq!r} + 'after-{name}\\n')\n"
    f"sys.stderr.write('err-{name}' + {seq!r} + '\\n')\n"
    for name, seq in SEQUENCES
) + "sys.exit(int(sys.argv[1]))\n"


def on_tty(argv: list[str], cwd: Path, timeout: float = 120.0) -> tuple[bytes, int]:
    """Run ``argv`` with stdin/stdout/stderr on a fresh pseudo-terminal; everything it printed, and its code."""
    master, slave = pty.openpty()
    env = {**os.environ, "DAD_SANDBOX_NO_SERVER": "1", "TERM": "xterm-256color"}
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    end = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                proc.kill()
                raise AssertionError(f"{argv[3:5]} did not finish within {timeout}s")
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return b"".join(chunks), proc.wait(timeout=30)


def run_exec(project: Path, runtime: str, code: int, *, tty: bool) -> tuple[bytes, int]:
    policy = "gvisor" if runtime == "runsc" else "untrusted"
    argv = [*CLI, "exec", "--policy", policy, "--run-root", str(project.parent / "runs"),
            "--prefix", "esc", *([] if tty else ["--json"]), "--", "python3", "-c", SCRIPT, str(code)]
    if tty:
        return on_tty(argv, project)
    done = subprocess.run(argv, cwd=project, capture_output=True, timeout=120,
                          env={**os.environ, "DAD_SANDBOX_NO_SERVER": "1"})
    return done.stdout, done.returncode


def the_run(project: Path) -> str:
    runs = sorted(p.name for p in (project.parent / "runs").iterdir() if p.name.startswith("esc_"))
    assert len(runs) == 1, runs
    return runs[0]


def row(record: list[dict[str, Any]], name: str, runtime: str, status: str, reason: str | None,
        defends: str) -> dict[str, Any]:
    """A result row, recorded as not contained until the assertions pass."""
    entry = {"attack": name, "runtime": runtime, "status": status, "reason": reason, "defended_by": defends,
             "contained": False}
    record.append(entry)
    return entry


def assert_escaped(out: bytes) -> None:
    leaked = [name for (name, _), raw in zip(SEQUENCES, RAW, strict=True) if raw in out]
    assert not leaked, f"raw control sequences reached the terminal: {leaked}"
    for name, _ in SEQUENCES:
        assert f"before-{name}".encode() in out and f"after-{name}".encode() in out, f"{name}: the line was dropped"


@pytest.mark.parametrize("code", [0, 3])
def test_exec_on_a_terminal(project, runtime, record_result, code: int) -> None:
    """exec on a terminal shows the run's stdout/stderr (and the error summary) with control sequences escaped."""
    out, rc = run_exec(project, runtime, code, tty=True)
    status = "completed" if code == 0 else "failed"
    entry = row(record_result, f"terminal-escapes-exec-exit{code}", runtime, status,
                None if code == 0 else "exit_code", "control characters escaped on a terminal")
    assert rc == (0 if code == 0 else 1), out[-2000:]
    assert_escaped(out)
    entry["contained"] = True


def test_runs_logs_on_a_terminal(project, runtime, record_result) -> None:
    """runs logs on a terminal shows the stored output with control sequences escaped."""
    _, rc = run_exec(project, runtime, 0, tty=False)
    assert rc == 0
    entry = row(record_result, "terminal-escapes-runs-logs", runtime, "completed", None,
                "control characters escaped on a terminal")
    out, rc = on_tty([*CLI, "runs", "logs", the_run(project), "--run-root", str(project.parent / "runs")], project)
    assert rc == 0, out[-2000:]
    assert_escaped(out)
    entry["contained"] = True


def test_json_keeps_output_intact(project, runtime, record_result) -> None:
    """runs logs --json keeps the run's bytes exactly (JSON escapes them), for tools that want the raw output."""
    _, rc = run_exec(project, runtime, 0, tty=False)
    assert rc == 0
    entry = row(record_result, "terminal-escapes-json-intact", runtime, "completed", None,
                "--json keeps output intact (JSON-escaped)")
    done = subprocess.run([*CLI, "runs", "logs", "--json", the_run(project), "--run-root", str(project.parent / "runs")],
                          cwd=project, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not any(raw in done.stdout for raw in RAW), "raw control bytes in JSON output"
    messages = [json.loads(line).get("message") for line in done.stdout.decode().splitlines()]
    for name, seq in SEQUENCES:
        assert f"before-{name}{seq}after-{name}" in messages, name
        assert f"err-{name}{seq}" in messages, name
    entry["contained"] = True
