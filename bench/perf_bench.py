"""Latency and throughput of dad-sandbox beside raw Docker (issues 6 and 13). A benchmark, not a test.

    .venv/bin/python bench/perf_bench.py [--runs 30] [--quick]

Same image, same command (`true`), measurements alternated within one process so drift hits all
of them alike. Prints a table and writes bench/results/perf.json (compare it with the committed
one: bench/compare.py).

`dad_cli_exec_auto` is `dad-sandbox exec` as a new user types it: nothing started beforehand, so
its first call starts the resident supervisor (timed apart as `first_exec_ms`) and the later calls
go through it. Its socket is private to this benchmark and the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import structlog

from dad_sandbox import IsolatedExecution, RunContext, Supervisor, __version__, load_policy
from dad_sandbox.run import read_metadata
from dad_sandbox.sandbox._policy import runner_tag

IMAGE = f"dad-sandbox-runner:{runner_tag()}"
CMD = ["true"]
DAD_CLI = [sys.executable, "-m", "dad_sandbox.cli"]
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(pct(values, 50) * 1000, 1), "p90_ms": round(pct(values, 90) * 1000, 1),
            "p99_ms": round(pct(values, 99) * 1000, 1), "mean_ms": round(statistics.mean(values) * 1000, 1)}


def _engine_pids() -> list[int]:
    """dockerd (from its pid file) and its children (containerd). Shims and runc are not counted:
    they are reparented to init and their CPU time is lost when they exit."""
    try:
        dockerd = int(Path("/var/run/docker.pid").read_text().strip())
    except (OSError, ValueError):
        return []
    pids = [dockerd]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == dockerd:
                pids.append(int(entry.name))
    return pids


def engine_cpu_seconds() -> float:
    """CPU seconds used so far by the engine's long-lived processes (user + system)."""
    total = 0
    for pid in _engine_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    """The machine the figures came from (docs/PERFORMANCE.md names it from this)."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), 0)
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem / 2**20, 1),
            "python": platform.python_version(), "kernel": platform.release()}


def machine_load() -> dict[str, Any]:
    """What else the machine was doing (other users of the shared engine show up here)."""
    load = os.getloadavg()
    return {"loadavg_1m": round(load[0], 2), "loadavg_5m": round(load[1], 2)}


class Bench:
    def __init__(self, project: Path) -> None:
        self.project = project
        self.api = docker.APIClient(version="auto")
        self.policy = load_policy("untrusted")
        self.loop = asyncio.new_event_loop()

    # ---- the contenders
    def docker_cli(self) -> float:
        t = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", "--network", "none", "--init", IMAGE, *CMD], check=True,
                       stdout=subprocess.DEVNULL)
        return time.perf_counter() - t

    def docker_sdk(self) -> float:
        t = time.perf_counter()
        api = self.api
        cid = api.create_container(IMAGE, CMD, network_disabled=True, host_config=api.create_host_config(init=True))
        api.start(cid)
        api.wait(cid)
        api.remove_container(cid, force=True)
        return time.perf_counter() - t

    def dad_cold(self) -> float:
        async def one() -> float:
            ctx = RunContext("exec", self.project)
            ctx.setup_run()
            t = time.perf_counter()
            async with IsolatedExecution(ctx, self.policy) as execution:
                result = await execution.run_command(CMD)
            assert result.ok, result.error
            return time.perf_counter() - t
        return self.loop.run_until_complete(one())

    def dad_cli(self) -> float:
        t = time.perf_counter()
        subprocess.run([*DAD_CLI, "exec", "--json", "--no-server", "--", *CMD], cwd=self.project, check=True,
                       stdout=subprocess.DEVNULL)
        return time.perf_counter() - t

    def dad_cli_auto(self) -> float:
        t = time.perf_counter()
        subprocess.run([*DAD_CLI, "exec", "--json", "--", *CMD], cwd=self.project, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=self.auto_env)
        return time.perf_counter() - t

    def first_auto_exec(self) -> dict[str, float]:
        """The very first exec (it starts the server), and how long until the server listens."""
        self.auto_sock = self.project / ".bench-auto" / "sv.sock"
        self.auto_env = {k: v for k, v in os.environ.items() if k not in ("DAD_SANDBOX_AUTOSTART", "DAD_SANDBOX_NO_SERVER")}
        self.auto_env["DAD_SANDBOX_SOCKET"] = str(self.auto_sock)
        t = time.perf_counter()
        first = self.dad_cli_auto()
        while not self.auto_sock.exists() and time.perf_counter() - t < 120:
            time.sleep(0.02)
        return {"first_exec_ms": round(first * 1000, 1), "server_listening_after_s": round(time.perf_counter() - t, 2)}

    def stop_auto(self) -> None:
        subprocess.run([*DAD_CLI, "serve", "--stop"], cwd=self.project, env=self.auto_env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def alternate(self, fns: dict[str, Callable[[], float]], runs: int) -> dict[str, list[float]]:
        for fn in fns.values():  # warm up caches, image layers, imports
            fn()
        out: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(runs):
            for name, fn in fns.items():
                out[name].append(fn())
        return out

    # ---- warm pool
    def warm_pool(self, runs: int) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            async with Supervisor(project_root=self.project, warm_pool={"untrusted": 4}, recover_on_start=False) as sup:
                await sup.pool_ready()
                dispatch, total = [], []
                for _ in range(runs):
                    t = time.perf_counter()
                    result = await sup.submit(CMD).wait()
                    total.append(time.perf_counter() - t)
                    dispatch.append(result.metadata.dispatch_seconds or float("nan"))
                    await sup.pool_ready()
                return {"dispatch": summary(dispatch), "total": summary(total)}
        return self.loop.run_until_complete(go())

    # ---- throughput
    def throughput(self, concurrency: int, runs: int, *, warm: bool) -> dict[str, Any]:
        """Runs/s of ``runs`` submitted at once; engine CPU per run; for the warm pool, dispatch latency."""
        async def go() -> dict[str, Any]:
            pool = {"untrusted": concurrency} if warm else None
            async with Supervisor(project_root=self.project, max_parallel=concurrency, warm_pool=pool,
                                  recover_on_start=False) as sup:
                if warm:
                    await sup.pool_ready()
                cpu, t = engine_cpu_seconds(), time.perf_counter()
                handles = [sup.submit(CMD) for _ in range(runs)]
                results = await asyncio.gather(*(h.wait() for h in handles))
                wall, cpu = time.perf_counter() - t, engine_cpu_seconds() - cpu
                assert all(r.ok for r in results)
                out = {"runs_per_s": round(runs / wall, 2), "engine_cpu_ms_per_run": round(cpu / runs * 1000, 1)}
                if warm:
                    dispatch = [r.metadata.dispatch_seconds for r in results if r.metadata.dispatch_seconds is not None]
                    out["dispatch"] = summary(dispatch) if dispatch else None
                    out["warm_share"] = round(len(dispatch) / runs, 2)
                return out
        return self.loop.run_until_complete(go())

    def docker_throughput(self, concurrency: int, runs: int) -> dict[str, Any]:
        from concurrent.futures import ThreadPoolExecutor
        cpu, t = engine_cpu_seconds(), time.perf_counter()
        with ThreadPoolExecutor(concurrency) as ex:
            list(ex.map(lambda _: self.docker_sdk(), range(runs)))
        wall, cpu = time.perf_counter() - t, engine_cpu_seconds() - cpu
        return {"runs_per_s": round(runs / wall, 2), "engine_cpu_ms_per_run": round(cpu / runs * 1000, 1)}

    # ---- deadline precision
    def deadline_precision(self, runs: int) -> dict[str, float]:
        late = []
        for _ in range(runs):
            ctx = RunContext("exec", self.project)
            ctx.setup_run()

            async def one(ctx: RunContext = ctx) -> None:
                async with IsolatedExecution(ctx, self.policy, timeout=1.0) as execution:
                    await execution.run_command(["sleep", "30"])
            self.loop.run_until_complete(one())
            md = read_metadata(ctx.run_dir)
            deadline = __import__("datetime").datetime.fromisoformat(md.supervisor["deadline"]).timestamp()
            late.append(md.completed_at.timestamp() - deadline)
        return summary(late)

    # ---- scaling
    def scaling(self, levels: list[int]) -> list[dict[str, Any]]:
        import resource
        rows = []
        for n in levels:
            async def go(n: int = n) -> dict[str, Any]:
                async with Supervisor(project_root=self.project, max_parallel=n, recover_on_start=False) as sup:
                    t = time.perf_counter()
                    handles = [sup.submit(["sleep", "1"]) for _ in range(n)]
                    results = await asyncio.gather(*(h.wait() for h in handles))
                    wall = time.perf_counter() - t
                    failed = sum(1 for r in results if not r.ok)
                    lat = [r.duration_seconds or 0 for r in results]
                    return {"concurrent": n, "wall_s": round(wall, 2), "failed": failed,
                            "run_p50_s": round(pct(lat, 50), 2), "run_p99_s": round(pct(lat, 99), 2),
                            "supervisor_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
            rows.append(self.loop.run_until_complete(go()))
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="fewer runs everywhere (a smoke run)")
    parser.add_argument("--only", choices=["cold", "warm", "throughput", "deadline", "scaling"], action="append",
                        help="run only these parts (repeatable)")
    args = parser.parse_args()
    runs = 5 if args.quick else args.runs
    tmp = tempfile.mkdtemp(prefix="dad-bench-")
    bench = Bench(Path(tmp))
    info = bench.api.info()
    out: dict[str, Any] = {"machine": {**machine(), "engine": bench.api.version().get("Version"),
                                       "storage": info.get("Driver"), "cgroup": info.get("CgroupVersion"),
                                       "runtime": info.get("DefaultRuntime"), "dad_sandbox": __version__, "image": IMAGE}}
    out["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out["load_before"] = machine_load()
    parts = set(args.only or ["cold", "warm", "throughput", "deadline", "scaling"])
    if "cold" in parts:
        print(f"cold path: {runs} runs each, alternating ...", file=sys.stderr)
        out["first_exec"] = bench.first_auto_exec()
        try:
            cold = bench.alternate({"docker_cli": bench.docker_cli, "docker_sdk": bench.docker_sdk,
                                    "dad_run_command": bench.dad_cold, "dad_cli_exec_no_server": bench.dad_cli,
                                    "dad_cli_exec_auto": bench.dad_cli_auto}, runs)
        finally:
            bench.stop_auto()
        out["cold"] = {k: summary(v) for k, v in cold.items()}
        med = {k: statistics.median(v) for k, v in cold.items()}
        out["ratios"] = {"run_command_vs_sdk": round(med["dad_run_command"] / med["docker_sdk"], 3),
                         "cli_exec_auto_vs_docker_run": round(med["dad_cli_exec_auto"] / med["docker_cli"], 3),
                         "cli_exec_no_server_vs_docker_run": round(med["dad_cli_exec_no_server"] / med["docker_cli"], 3)}
    if "warm" in parts:
        print("warm pool ...", file=sys.stderr)
        out["warm_pool"] = bench.warm_pool(runs)
    if "throughput" in parts:
        print("throughput ...", file=sys.stderr)
        n = 40 if args.quick else 200
        out["throughput"] = {
            str(c): {"docker_sdk": bench.docker_throughput(c, n),
                     "dad_cold": bench.throughput(c, n, warm=False),
                     "dad_warm": bench.throughput(c, n, warm=True)} for c in (1, 4, 8, 16)}
    if "deadline" in parts:
        print("deadline precision ...", file=sys.stderr)
        out["deadline_late"] = bench.deadline_precision(5 if args.quick else 30)
    if "scaling" in parts:
        print("scaling ...", file=sys.stderr)
        out["scaling"] = bench.scaling([1, 10] if args.quick else [1, 10, 25, 50, 100])
    out["load_after"] = machine_load()
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    name = "perf.json" if not args.only else f"perf-{'-'.join(sorted(parts))}.json"
    (results / name).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
