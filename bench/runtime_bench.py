"""Cold start per OCI runtime, phase by phase (issue 13): runc, crun and gVisor (runsc) side by side.

    .venv/bin/python bench/runtime_bench.py [--runs 15]

Each round runs `true` once on every runtime the engine has registered (alternated, so drift hits
all alike), timing the engine calls apart: create, start, wait (the process runs and exits), remove.
runsc uses the arguments our dockerd registers it with (scripts/engine.sh). A runtime the engine
does not know is reported as missing, not measured. Writes bench/results/runtimes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import docker

from dad_sandbox.sandbox._policy import runner_tag

IMAGE = f"dad-sandbox-runner:{runner_tag()}"
RUNTIMES = ("runc", "crun", "runsc")
PHASES = ("create", "start", "wait", "remove")


def one(api: Any, runtime: str) -> dict[str, float]:
    times: dict[str, float] = {}
    t = time.perf_counter()
    cid = api.create_container(IMAGE, ["true"], network_disabled=True, labels={"dad.bench": "runtimes"},
                               host_config=api.create_host_config(init=True, runtime=runtime))
    times["create"] = time.perf_counter() - t
    try:
        t = time.perf_counter()
        api.start(cid)
        times["start"] = time.perf_counter() - t
        t = time.perf_counter()
        api.wait(cid)
        times["wait"] = time.perf_counter() - t
    finally:
        t = time.perf_counter()
        api.remove_container(cid, force=True)
        times["remove"] = time.perf_counter() - t
    times["total"] = sum(times[p] for p in PHASES)
    return times


def p(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    api = docker.APIClient(version="auto")
    registered = set((api.info().get("Runtimes") or {}).keys())
    present = [r for r in RUNTIMES if r in registered]
    out: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                                       "engine": api.version().get("Version"), "image": IMAGE},
                           "load_before": {"loadavg_1m": round(os.getloadavg()[0], 2)},
                           "missing": [r for r in RUNTIMES if r not in registered]}
    # A runtime the engine knows may still refuse to run anything here (crun 1.8 and cgroup hybrid
    # mode, measured): report the engine's words and leave it out, rather than stop the benchmark.
    out["unusable"] = {}
    for r in list(present):
        try:
            one(api, r)  # warm-up
        except docker.errors.APIError as exc:
            out["unusable"][r] = str(exc.explanation or exc)[:300]
            present.remove(r)
    samples: dict[str, list[dict[str, float]]] = {r: [] for r in present}
    for i in range(args.runs):
        print(f"round {i + 1}/{args.runs}", file=sys.stderr)
        for r in present:
            samples[r].append(one(api, r))
    out["runtimes"] = {}
    for r, rows in samples.items():
        totals = [s["total"] for s in rows]
        out["runtimes"][r] = {"n": len(rows), "p50_ms": p(totals, 50), "p90_ms": p(totals, 90),
                              "phases_p50_ms": {ph: round(statistics.median(s[ph] for s in rows) * 1000, 1) for ph in PHASES}}
    if "runc" in out["runtimes"]:
        out["runc"] = out["runtimes"]["runc"]
        base = out["runc"]["p50_ms"]
        out["ratios"] = {f"{r}_vs_runc": round(v["p50_ms"] / base, 3) for r, v in out["runtimes"].items() if r != "runc"}
    out["load_after"] = {"loadavg_1m": round(os.getloadavg()[0], 2)}
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "runtimes.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
