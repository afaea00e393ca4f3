"""Copy mode's cost (issue 17): wall time of one run with the run dir bind-mounted, copied on the
local engine, and copied on a second engine with a filesystem of its own; and the host's peak RSS
while a large run dir comes back (the archive is streamed, never held whole).

A benchmark, not a test: it prints figures and writes bench/results/remote.json.

    .venv/bin/python bench/remote_bench.py        # stands up (and removes) a second engine itself
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from dad_sandbox import __version__

ROOT = Path(__file__).resolve().parents[1]
REPEAT = 7
CASES = {
    "true": "true",
    "100 MiB in one file": "head -c 104857600 /dev/zero > big",
    "5000 small files": "mkdir f && cd f && seq 1 5000 | xargs touch",
}
ONE_RUN = r"""
import asyncio, json, resource, sys, time
from pathlib import Path
from dad_sandbox import IsolatedExecution, RunContext, load_policy
from dad_sandbox.run import read_metadata
from dad_sandbox.sandbox.engine._docker import DockerEngine
project, url, script, repeat = Path(sys.argv[1]), sys.argv[2] or None, sys.argv[3], int(sys.argv[4])
policy = load_policy("untrusted").with_overrides(disk_quota=1 << 30, timeout=120)
async def main():
    engine = DockerEngine(base_url=url)
    out = []
    for _ in range(repeat + 1):  # the first run pays the probe and warms caches: not counted
        ctx = RunContext("bench", project)
        ctx.setup_run()
        t0 = time.perf_counter()
        async with IsolatedExecution(ctx, policy, engine=engine) as ex:
            result = await ex.run_command(["sh", "-c", script])
        md = read_metadata(ctx.run_dir)
        out.append({"seconds": time.perf_counter() - t0, "status": result.status.value, "mode": md.run_dir_mode,
                    "copy": md.run_dir_copy or {}})
    await engine.close()
    return out[1:]
runs = asyncio.run(main())
print(json.dumps({"runs": runs, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(project: Path, url: str, mode: str, script: str, repeat: int) -> dict[str, object]:
    env = {**os.environ, "DAD_SANDBOX_RUN_DIR_TRANSFER": mode}
    proc = subprocess.run([sys.executable, "-c", ONE_RUN, str(project), url, script, str(repeat)], env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-500:]}
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    runs = data["runs"]
    copy_in = [r["copy"].get("copy_in_seconds") for r in runs if r["copy"]]
    copy_out = [r["copy"].get("copy_out_seconds") for r in runs if r["copy"]]
    return {
        "mode": runs[0]["mode"], "statuses": sorted({r["status"] for r in runs}),
        "median_seconds": round(statistics.median(r["seconds"] for r in runs), 3),
        "copy_in_seconds": round(statistics.median(copy_in), 3) if copy_in else None,
        "copy_out_seconds": round(statistics.median(copy_out), 3) if copy_out else None,
        "peak_rss_mib": round(data["peak_rss_mib"], 1),
    }


def main() -> None:
    name = f"rb-{secrets.token_hex(3)}"
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="dad-remote-bench-") as tmp:
        state = Path(tmp) / "cluster"
        env = {**os.environ, "DAD_CLUSTER_STATE": str(state)}
        subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "up", "--name", name, "--standalone"], env=env,
                       check=True, stdin=subprocess.DEVNULL, capture_output=True)
        remote = f"unix://{state}/{name}/nodes/node-1/docker.sock"
        try:
            project = Path(tmp) / "project"
            project.mkdir()
            os.chmod(tmp, 0o755)
            for case, script in CASES.items():
                repeat = REPEAT if case == "true" else 2
                for label, url, mode in (("bind (local engine)", "", "bind"), ("copy (local engine)", "", "copy"),
                                         ("copy (second engine)", remote, "auto")):
                    results[f"{case} / {label}"] = r = measure(project, url, mode, script, repeat)
                    print(f"{case:22} {label:22} {r}", flush=True)
        finally:
            subprocess.run(["bash", str(ROOT / "scripts/cluster.sh"), "down", "--name", name], env=env,
                           check=False, stdin=subprocess.DEVNULL, capture_output=True)
    out = ROOT / "bench" / "results" / "remote.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"version": __version__, "machine": platform.platform(), "cpus": os.cpu_count(),
                               "results": results}, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
