"""Swarm engine figures on the local cluster of ``make cluster``: latency, throughput, node-loss detection.

Usage: ``DAD_CLUSTER_NAME=<name> python bench/cluster_bench.py`` (or ``DAD_CLUSTER_ENV=<cluster.env>``),
with ``DAD_SANDBOX_RUNNER_TAG`` set as ``make`` does. Prints figures; asserts nothing.

"1 node" is the same cluster with the other nodes drained (Swarm places nothing there), so both
figures pay the same manager and the same shared disk. The node-loss figure kills the last node
with one run on it and restarts it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dad_sandbox import IsolatedExecution, RunContext, Supervisor, load_policy
from dad_sandbox.sandbox.engine._swarm import SwarmEngine
from tests.cluster.conftest import _env_file

SEQUENTIAL = 10
BATCH = 30


def read_env() -> dict[str, str]:
    values = {}
    for line in _env_file().read_text().splitlines():
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def set_availability(engine: SwarmEngine, hostname: str, availability: str) -> None:
    node = engine.api.inspect_node(hostname)
    engine.api.update_node(node["ID"], node["Version"]["Index"], dict(node["Spec"], Availability=availability))


async def one_run(engine: SwarmEngine, base: Path, policy, argv: list[str]) -> float:
    ctx = RunContext("exec", base / "project", run_root=base / "runs")
    ctx.setup_run()
    t0 = time.perf_counter()
    async with IsolatedExecution(ctx, policy, engine=engine) as execution:
        result = await execution.run_command(argv)
    assert result.status.value == "completed", result.error
    return time.perf_counter() - t0


async def measure(engine: SwarmEngine, base: Path, policy) -> tuple[float, float]:
    """(median latency of one `true` run, runs per second for BATCH runs through one Supervisor)."""
    latencies = [await one_run(engine, base, policy, ["true"]) for _ in range(SEQUENTIAL)]
    t0 = time.perf_counter()
    async with Supervisor(engine=engine, policy=policy, project_root=base / "project", run_root=base / "runs",
                          max_parallel=12) as sup:
        handles = [sup.submit(["sh", "-c", "sleep 1"]) for _ in range(BATCH)]
        results = await asyncio.gather(*(h.wait() for h in handles))
    elapsed = time.perf_counter() - t0
    assert all(r.status.value == "completed" for r in results)
    return statistics.median(latencies), BATCH / elapsed


def wait_running(ctx: RunContext) -> None:
    while ctx.metadata.status.value != "running":
        time.sleep(0.1)


async def node_loss(engine: SwarmEngine, base: Path, policy, container: str) -> float:
    """Seconds from `docker kill` of the node running a run to that run's final status."""
    ctx = RunContext("exec", base / "project", run_root=base / "runs")
    ctx.setup_run()
    async with IsolatedExecution(ctx, policy, engine=engine) as execution:
        task = asyncio.create_task(execution.run_command(["sleep", "60"]))
        await asyncio.to_thread(wait_running, ctx)
        await asyncio.sleep(1)
        t0 = time.perf_counter()
        await asyncio.to_thread(subprocess.run, ["docker", "kill", container], check=True, capture_output=True)
        result = await task
    assert result.reason == "node_lost", (result.status, result.reason)
    return time.perf_counter() - t0


def main() -> None:
    env = read_env()
    nodes = env["DAD_CLUSTER_NODES"].split()
    engine = SwarmEngine(base_url=env["DAD_CLUSTER_MANAGER"])
    base = Path(env["DAD_CLUSTER_SHARED"]) / f"bench-{uuid.uuid4().hex[:8]}"
    (base / "project").mkdir(parents=True)
    policy = load_policy("untrusted").with_overrides(seccomp="docker-default")
    print(f"cluster {env['DAD_CLUSTER_NAME']}: {len(nodes)} nodes, {os.cpu_count()} host cores; "
          f"latency = median of {SEQUENTIAL} sequential `true` runs, throughput = {BATCH} `sleep 1` runs, 12 at a time")
    try:
        for n in nodes[1:]:
            set_availability(engine, n, "drain")
        try:
            lat1, thr1 = asyncio.run(measure(engine, base, policy))
        finally:
            for n in nodes[1:]:
                set_availability(engine, n, "active")
        print(f"1 node : latency {lat1:.2f} s, throughput {thr1:.1f} runs/s")
        lat3, thr3 = asyncio.run(measure(engine, base, policy))
        print(f"{len(nodes)} nodes: latency {lat3:.2f} s, throughput {thr3:.1f} runs/s")
        victim = nodes[-1]
        pinned = policy.with_overrides(placement=[f"node.hostname=={victim}"])
        container = f"dad-cluster-{env['DAD_CLUSTER_NAME']}-{victim}"
        try:
            lost = asyncio.run(node_loss(engine, base, pinned, container))
            print(f"node loss: run ended crashed (node_lost) {lost:.1f} s after its node was killed (heartbeat 1 s)")
        finally:
            subprocess.run(["docker", "start", container], check=True, capture_output=True)
            end = time.monotonic() + 90
            while time.monotonic() < end and not any(
                    n["Description"]["Hostname"] == victim and n["Status"]["State"] == "ready" for n in engine.api.nodes()):
                time.sleep(0.5)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
