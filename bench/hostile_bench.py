"""Host cost of hostile runs (issue 9): peak RSS and wall time of the supervising process
(``dad-sandbox exec``) while it collects what a hostile run left behind. Budget: 100 MiB RSS.

A benchmark, not a test: it prints figures and writes bench/results/hostile.json.

    .venv/bin/python bench/hostile_bench.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dad_sandbox import __version__

CLI = [sys.executable, "-m", "dad_sandbox.cli"]
BUDGET_MIB = 100
CASES = {
    "baseline (true)": "true",
    "64 MiB of junk lines in the runner's trace": "yes x | head -c 67108864 > .runner/trace.jsonl",
    "4M-line trace + recursion-bomb outcome.json": (
        "yes x | head -n 4000000 > .runner/trace.jsonl; mkdir o; "
        "python3 -c \"print('[' * 100000)\" > o/outcome.json"
    ),
    "200 sparse 16 MiB outcome.json files": (
        "for i in $(seq 1 200); do mkdir -p n$i && truncate -s 16000000 n$i/outcome.json; done"
    ),
    "16 MiB of empty lines on stdout": "head -c 16777216 /dev/zero | tr '\\0' '\\n'",
    "50k files in the run dir": "mkdir f && cd f && seq 1 50000 | xargs touch",
    "a 1 MiB stderr line of brackets": "head -c 1048576 /dev/zero | tr '\\0' '[' >&2",
}


def measure(project: Path, script: str) -> dict[str, object]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([*CLI, "exec", "--json", "--run-root", str(project / "runs"), "--", "sh", "-c", script],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    result = json.loads(out) if out.strip() else {}
    return {"status": result.get("status"), "reason": result.get("reason"), "seconds": round(seconds, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "within_budget": usage.ru_maxrss / 1024 <= BUDGET_MIB}


def main() -> None:
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="dad-hostile-bench-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        os.chmod(tmp, 0o755)
        for name, script in CASES.items():
            results[name] = measure(project, script)
            r = results[name]
            print(f"{name:<48} {r['status']!s:<10} {r['seconds']:>7.2f}s  peak RSS {r['peak_rss_mib']:>6.1f} MiB"
                  f"  {'ok' if r['within_budget'] else 'OVER BUDGET'}")
    out = Path(__file__).parent / "results" / "hostile.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                           "dad_sandbox": __version__}, "budget_mib": BUDGET_MIB,
                               "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
