"""Sessions (issue 15): exec latency in a warm session against `docker exec` and the raw API, and
file round-trip throughput.

A benchmark, not a test: it prints figures and writes bench/results/sessions.json.

    DAD_SANDBOX_RUNNER_TAG=$(cat build/runner-tag) .venv/bin/python bench/session_bench.py
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import docker

from dad_sandbox import Session

RUNS = 40
FILE_MIB = 8


def p(xs: list[float], q: float) -> float:
    return round(sorted(xs)[min(int(len(xs) * q), len(xs) - 1)], 1)


async def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "project").mkdir()
        async with Session(policy="untrusted", timeout="10m", project_root=Path(tmp) / "project",
                           run_root=Path(tmp) / "runs") as s:
            assert s.container_id is not None
            for _ in range(5):
                await s.exec(["true"])
            session_ms = []
            for _ in range(RUNS):
                t = time.perf_counter()
                await s.exec(["true"])
                session_ms.append((time.perf_counter() - t) * 1000)
            cli_ms = []
            for _ in range(RUNS // 2):
                t = time.perf_counter()
                subprocess.run(["docker", "exec", s.container_id, "true"], check=True)  # noqa: ASYNC221 - the CLI is what is measured
                cli_ms.append((time.perf_counter() - t) * 1000)
            api = docker.APIClient(version="auto")
            raw_ms = []
            for _ in range(RUNS // 2):
                t = time.perf_counter()
                exec_id = api.exec_create(s.container_id, ["true"])["Id"]
                api.exec_start(exec_id)
                api.exec_inspect(exec_id)
                raw_ms.append((time.perf_counter() - t) * 1000)
            data = os.urandom(FILE_MIB << 20)
            t = time.perf_counter()
            await s.write_file("blob", data)
            write_s = time.perf_counter() - t
            t = time.perf_counter()
            back = await s.read_file("blob", text=False)
            read_s = time.perf_counter() - t
            assert back == data
    return {
        "session_exec_true_ms": {"p50": p(session_ms, 0.5), "p90": p(session_ms, 0.9)},
        "docker_exec_cli_true_ms": {"p50": p(cli_ms, 0.5), "p90": p(cli_ms, 0.9)},
        "raw_api_exec_true_ms": {"p50": p(raw_ms, 0.5), "p90": p(raw_ms, 0.9)},
        f"write_file_{FILE_MIB}MiB_MiB_per_s": round(FILE_MIB / write_s, 1),
        f"read_file_{FILE_MIB}MiB_MiB_per_s": round(FILE_MIB / read_s, 1),
    }


if __name__ == "__main__":
    figures = asyncio.run(main())
    print(json.dumps(figures, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "sessions.json").write_text(json.dumps(figures, indent=2) + "\n")
