"""Supervisor figures (issue 3): memory under a 1 GiB output flood, time to recover 20 orphaned
runs, and containers leaked. A benchmark, not a test: it prints figures and writes JSON.

    .venv/bin/python bench/supervisor_bench.py [--orphans 20] [--flood-mib 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

from dad_sandbox import RunStatus, Supervisor
from dad_sandbox.run import read_metadata
from dad_sandbox.sandbox._policy import runner_tag

CLI = [sys.executable, "-m", "dad_sandbox.cli"]
IMAGE = f"dad-sandbox-runner:{runner_tag()}"
SPAWN = """
import sys
from dad_sandbox.sync import exec_command
exec_command(sys.argv[3:], timeout=float(sys.argv[2]), project_root=sys.argv[1], run_root=sys.argv[1] + "/runs")
"""


def flood(project: Path, mib: int, rounds: int) -> dict[str, Any]:
    """The same flood through ``dad-sandbox exec`` and through ``docker run`` to /dev/null, alternated."""
    code = f"import sys\nline = b'x' * 1023 + b'\\n'\nw = sys.stdout.buffer.write\nfor _ in range({mib} << 10): w(line)\n"
    ours, raw, md = [], [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        # --no-server: the supervisor measured is this child process (its peak RSS is RUSAGE_CHILDREN's)
        proc = subprocess.run([*CLI, "exec", "--json", "--no-server", "--", "python3", "-c", code], cwd=project,
                              capture_output=True, text=True, check=False)
        ours.append(time.perf_counter() - t0)
        md = read_metadata(Path(json.loads(proc.stdout)["run_dir"]))
        t0 = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", "--network", "none", "--log-driver", "none", IMAGE, "python3", "-c", code],
                       stdout=subprocess.DEVNULL, check=True)
        raw.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert md is not None
    return {
        "flood_mib": mib,
        "rounds": rounds,
        "supervisor_peak_rss_mib": round(peak / 1024, 1),
        "dad_sandbox_wall_s": round(statistics.median(ours), 2),
        "docker_run_to_devnull_wall_s": round(statistics.median(raw), 2),
        "ratio": round(statistics.median(ours) / statistics.median(raw), 3),
        "bytes_kept": md.output.bytes_kept,
        "bytes_dropped": md.output.bytes_dropped,
        "truncated": md.output.truncated,
        "status": md.status.value,
    }


def spawn_orphans(project: Path, n: int, timeout: float, argv: list[str]) -> list[Path]:
    runs = project / "runs"
    runs.mkdir(exist_ok=True)
    before = set(runs.iterdir())
    procs = [subprocess.Popen([sys.executable, "-c", SPAWN, str(project), str(timeout), *argv],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]
    end = time.monotonic() + 120
    while time.monotonic() < end:
        dirs = set(runs.iterdir()) - before
        running = [d for d in dirs if _status(d) == RunStatus.RUNNING]
        if len(running) == n:
            break
        time.sleep(0.05)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    return sorted(set(runs.iterdir()) - before)


def _status(run_dir: Path) -> RunStatus | None:
    try:
        return read_metadata(run_dir).status
    except Exception:
        return None


async def recover(project: Path) -> tuple[float, list]:
    async with Supervisor(project_root=project, recover_on_start=False) as sup:
        t0 = time.perf_counter()
        found = await sup.recover(wait=True)
        return time.perf_counter() - t0, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orphans", type=int, default=20)
    parser.add_argument("--flood-mib", type=int, default=1024)
    parser.add_argument("--flood-rounds", type=int, default=3)
    args = parser.parse_args()
    api = docker.APIClient(version="auto")
    results: dict[str, object] = {"machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                                              "engine": api.version().get("Version")}}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        print(f"flooding {args.flood_mib} MiB of output through dad-sandbox exec ...", file=sys.stderr)
        results["flood"] = flood(project, args.flood_mib, args.flood_rounds)

        print(f"orphaning {args.orphans} runs that exit on their own, then recovering ...", file=sys.stderr)
        dirs = spawn_orphans(project, args.orphans, 120, ["sh", "-c", "sleep 2"])
        time.sleep(3)
        secs, found = asyncio.run(recover(project))
        results["recover_exited"] = {"orphans": len(dirs), "seconds": round(secs, 2),
                                     "statuses": sorted({_status(d).value for d in dirs})}

        print(f"orphaning {args.orphans} running runs past their deadline, then recovering ...", file=sys.stderr)
        dirs = spawn_orphans(project, args.orphans, 3, ["sleep", "120"])
        time.sleep(3)
        secs, found = asyncio.run(recover(project))
        results["recover_running_past_deadline"] = {"orphans": len(dirs), "seconds": round(secs, 2),
                                                    "statuses": sorted({_status(d).value for d in dirs})}
        # only this benchmark's runs: the engine is shared with other dad-sandbox users
        mine = [c for c in api.containers(all=True, filters={"label": "dad.run_id"})
                if (c.get("Labels") or {}).get("dad.run_dir", "").startswith(str(project) + "/")]
        results["leaked_containers"] = len(mine)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "supervisor.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
