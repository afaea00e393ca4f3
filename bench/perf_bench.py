"""Latency and throughput of dad-sandbox beside raw Docker (issue 6). A benchmark, not a test.

    .venv/bin/python bench/perf_bench.py [--runs 30] [--quick]

Same image, same command (`true`), measurements alternated within one process so drift hits all
of them alike. Prints a table and writes bench/results/perf.json.
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
        subprocess.run([*DAD_CLI, "exec", "--json", "--", *CMD], cwd=self.project, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t

    def dad_cli_served(self) -> float:
        t = time.perf_counter()
        subprocess.run([*DAD_CLI, "exec", "--json", "--", *CMD], cwd=self.project, check=True, stdout=subprocess.DEVNULL,
                       env=self.served_env)
        return time.perf_counter() - t

    def start_server(self) -> subprocess.Popen[bytes]:
        sock = self.project / ".bench-sock" / "supervisor.sock"
        self.served_env = {**os.environ, "DAD_SANDBOX_SOCKET": str(sock)}
        proc = subprocess.Popen([*DAD_CLI, "serve", "--warm-pool", "untrusted=2"], cwd=self.project, env=self.served_env,
                                stdout=subprocess.DEVNULL)
        while not sock.exists():
            time.sleep(0.05)
        return proc

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
    def throughput(self, concurrency: int, runs: int, *, warm: bool) -> float:
        async def go() -> float:
            pool = {"untrusted": concurrency} if warm else None
            async with Supervisor(project_root=self.project, max_parallel=concurrency, warm_pool=pool,
                                  recover_on_start=False) as sup:
                if warm:
                    await sup.pool_ready()
                t = time.perf_counter()
                handles = [sup.submit(CMD) for _ in range(runs)]
                results = await asyncio.gather(*(h.wait() for h in handles))
                assert all(r.ok for r in results)
                return runs / (time.perf_counter() - t)
        return self.loop.run_until_complete(go())

    def docker_throughput(self, concurrency: int, runs: int) -> float:
        from concurrent.futures import ThreadPoolExecutor
        t = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as ex:
            list(ex.map(lambda _: self.docker_sdk(), range(runs)))
        return runs / (time.perf_counter() - t)

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
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                       "kernel": platform.release(), "engine": bench.api.version().get("Version"),
                                       "storage": info.get("Driver"), "cgroup": info.get("CgroupVersion"),
                                       "dad_sandbox": __version__, "image": IMAGE}}
    parts = set(args.only or ["cold", "warm", "throughput", "deadline", "scaling"])
    if "cold" in parts:
        print(f"cold path: {runs} runs each, alternating ...", file=sys.stderr)
        server = bench.start_server()
        try:
            cold = bench.alternate({"docker_cli": bench.docker_cli, "docker_sdk": bench.docker_sdk,
                                    "dad_run_command": bench.dad_cold, "dad_cli_exec": bench.dad_cli,
                                    "dad_cli_exec_served": bench.dad_cli_served}, runs)
        finally:
            server.terminate()
            server.wait()
        out["cold"] = {k: summary(v) for k, v in cold.items()}
        med = {k: statistics.median(v) for k, v in cold.items()}
        out["ratios"] = {"run_command_vs_sdk": round(med["dad_run_command"] / med["docker_sdk"], 3),
                         "cli_exec_vs_docker_run": round(med["dad_cli_exec"] / med["docker_cli"], 3),
                         "cli_exec_served_vs_docker_run": round(med["dad_cli_exec_served"] / med["docker_cli"], 3)}
    if "warm" in parts:
        print("warm pool ...", file=sys.stderr)
        out["warm_pool"] = bench.warm_pool(runs)
    if "throughput" in parts:
        print("throughput ...", file=sys.stderr)
        n = 40 if args.quick else 200
        out["throughput_runs_per_s"] = {
            str(c): {"docker_sdk": round(bench.docker_throughput(c, n), 2),
                     "dad_cold": round(bench.throughput(c, n, warm=False), 2),
                     "dad_warm": round(bench.throughput(c, n, warm=True), 2)} for c in (1, 4, 8, 16)}
    if "deadline" in parts:
        print("deadline precision ...", file=sys.stderr)
        out["deadline_late"] = bench.deadline_precision(5 if args.quick else 30)
    if "scaling" in parts:
        print("scaling ...", file=sys.stderr)
        out["scaling"] = bench.scaling([1, 10] if args.quick else [1, 10, 25, 50, 100])
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    name = "perf.json" if not args.only else f"perf-{'-'.join(sorted(parts))}.json"
    (results / name).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
