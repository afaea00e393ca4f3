"""Regenerate the figures in docs/PERFORMANCE.md from bench/results/*.json (``make bench`` runs it).

The page's prose is written by hand; each table sits between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` and is replaced from the results, so the page never shows a figure that
no results file holds. A block whose results are missing is left as it was.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RESULTS = HERE / "results"
DOC = HERE.parent / "docs" / "PERFORMANCE.md"

COLD_NAMES = {
    "docker_cli": "`docker run --rm --network none --init` (CLI)",
    "docker_sdk": "docker SDK: create + start + wait + remove (`network_disabled`, init)",
    "dad_run_command": "`IsolatedExecution.run_command` (untrusted policy)",
    "dad_cli_exec_auto": "`dad-sandbox exec --json` as typed (auto-started resident supervisor)",
    "dad_cli_exec_no_server": "`dad-sandbox exec --json --no-server` (a whole new Python process supervises)",
}


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _ms(fig: dict[str, Any] | None, key: str) -> str:
    return "" if not fig or fig.get(key) is None else f"{fig[key]:g} ms"


def machine(perf: dict[str, Any]) -> str:
    m = perf["machine"]
    lb, la = perf.get("load_before", {}), perf.get("load_after", {})
    return (f"Measured {perf.get('started_at', '?')} on {m.get('cpus')} × {m.get('cpu_model')}, {m.get('memory_gib')} GiB, "
            f"kernel {m.get('kernel')}, Docker {m.get('engine')} ({m.get('storage')}, cgroup v{m.get('cgroup')}, "
            f"default runtime {m.get('runtime')}), Python {m.get('python')}, image `{m.get('image')}`. "
            f"Load average (1 min) {lb.get('loadavg_1m', '?')} before and {la.get('loadavg_1m', '?')} after: the machine "
            "and its Docker engine were shared with other agents running test suites, so absolute figures are "
            "noisy; the ratios come from contenders alternated within one process.")


def cold(perf: dict[str, Any]) -> str:
    rows = ["| | p50 | p90 | p99 |", "|---|---|---|---|"]
    for key, fig in perf.get("cold", {}).items():
        rows.append(f"| {COLD_NAMES.get(key, key)} | {_ms(fig, 'p50_ms')} | {_ms(fig, 'p90_ms')} | {_ms(fig, 'p99_ms')} |")
    r = perf.get("ratios", {})
    first = perf.get("first_exec", {})
    rows += ["", "Ratios of medians:", "",
             f"* `dad-sandbox exec` as typed / `docker run`: **{r.get('cli_exec_auto_vs_docker_run')}** (target ≤ 1.0)",
             f"* `dad-sandbox exec --no-server` / `docker run`: {r.get('cli_exec_no_server_vs_docker_run')}",
             f"* `IsolatedExecution.run_command` / SDK: **{r.get('run_command_vs_sdk')}** (target ≤ 1.00)"]
    if first:
        rows.append(f"* the very first `exec` (starts the server, supervises its own run): {first.get('first_exec_ms')} ms; "
                    f"the server listened {first.get('server_listening_after_s')} s after it began")
    return "\n".join(rows)


def throughput(perf: dict[str, Any]) -> str:
    rows = ["| concurrency | docker SDK runs/s | dad-sandbox cold | dad-sandbox warm pool | engine CPU ms/run (SDK / cold / warm) "
            "| warm dispatch p50 / p99 |", "|---|---|---|---|---|---|"]
    for c, fig in perf.get("throughput", {}).items():
        sdk, cold_, warm = fig["docker_sdk"], fig["dad_cold"], fig["dad_warm"]
        d = warm.get("dispatch") or {}
        rows.append(f"| {c} | {sdk['runs_per_s']} | {cold_['runs_per_s']} | {warm['runs_per_s']} | "
                    f"{sdk['engine_cpu_ms_per_run']} / {cold_['engine_cpu_ms_per_run']} / {warm['engine_cpu_ms_per_run']} | "
                    f"{_ms(d, 'p50_ms')} / {_ms(d, 'p99_ms')} |")
    return "\n".join(rows)


def warm(perf: dict[str, Any]) -> str:
    w = perf["warm_pool"]
    return "\n".join(["| | p50 | p90 | p99 |", "|---|---|---|---|",
                      f"| dispatch: request → user code starts | {_ms(w['dispatch'], 'p50_ms')} | {_ms(w['dispatch'], 'p90_ms')} "
                      f"| {_ms(w['dispatch'], 'p99_ms')} |",
                      f"| whole run (submit → result, container removed) | {_ms(w['total'], 'p50_ms')} | "
                      f"{_ms(w['total'], 'p90_ms')} | {_ms(w['total'], 'p99_ms')} |"])


def deadline(perf: dict[str, Any]) -> str:
    d = perf["deadline_late"]
    return f"Kill time after the deadline ({d['n']} runs of `sleep 30` with a 1 s deadline): p50 **{_ms(d, 'p50_ms')}**, " \
           f"p90 {_ms(d, 'p90_ms')}, p99 {_ms(d, 'p99_ms')}."


def scaling(perf: dict[str, Any]) -> str:
    rows = ["| concurrent runs | wall time | run duration p50 | run duration p99 | failed | supervisor RSS |",
            "|---|---|---|---|---|---|"]
    for r in perf["scaling"]:
        rows.append(f"| {r['concurrent']} | {r['wall_s']} s | {r['run_p50_s']} s | {r['run_p99_s']} s | {r['failed']} "
                    f"| {r['supervisor_rss_mib']} MiB |")
    return "\n".join(rows)


def supervisor(sup: dict[str, Any]) -> str:
    f = sup["flood"]
    rows = ["| | figure |", "|---|---|",
            f"| supervisor peak RSS while a run prints {f['flood_mib']} MiB | {f['supervisor_peak_rss_mib']} MiB "
            f"({f['bytes_kept'] / 2**20:.0f} MiB kept, {f['bytes_dropped'] / 2**20:,.0f} MiB dropped and counted) |",
            f"| that flood's wall time, median of {f.get('rounds', 1)}: dad-sandbox vs `docker run … > /dev/null` | "
            f"{f['dad_sandbox_wall_s']} s vs {f['docker_run_to_devnull_wall_s']} s (**{f.get('ratio', '?')}×**, target ≤ 1.15) |"]
    for key, label in (("recover_exited", "recover {n} orphaned runs that had exited"),
                       ("recover_running_past_deadline", "recover {n} orphaned runs still running past their deadline")):
        if key in sup:
            rows.append(f"| {label.format(n=sup[key]['orphans'])} | {sup[key]['seconds']} s |")
    rows.append(f"| containers leaked (of this benchmark's runs) | {sup.get('leaked_containers')} |")
    return "\n".join(rows)


def runtimes(rt: dict[str, Any]) -> str:
    rows = ["| runtime | cold run p50 | p90 | × runc | create | start | wait | remove (p50 each) |",
            "|---|---|---|---|---|---|---|---|"]
    base = (rt.get("runc") or {}).get("p50_ms")
    for name, fig in rt.get("runtimes", {}).items():
        ratio = f"{fig['p50_ms'] / base:.2f}" if base and fig.get("p50_ms") else ""
        ph = fig.get("phases_p50_ms", {})
        rows.append(f"| {name} | {_ms(fig, 'p50_ms')} | {_ms(fig, 'p90_ms')} | {ratio} | {_ms(ph, 'create')} | "
                    f"{_ms(ph, 'start')} | {_ms(ph, 'wait')} | {_ms(ph, 'remove')} |")
    if rt.get("missing"):
        rows += ["", f"Not registered with the engine when measured (not measured): {', '.join(rt['missing'])}."]
    for name, why in (rt.get("unusable") or {}).items():
        rows += ["", f"Registered but unusable here (not measured): {name}: \"{why}\"."]
    return "\n".join(rows)


BLOCKS: dict[str, tuple[str, str | None, Callable[[dict[str, Any]], str]]] = {
    # block name: (results file, key that must be present, renderer)
    "machine": ("perf.json", "machine", machine),
    "cold": ("perf.json", "cold", cold),
    "throughput": ("perf.json", "throughput", throughput),
    "warm": ("perf.json", "warm_pool", warm),
    "deadline": ("perf.json", "deadline_late", deadline),
    "scaling": ("perf.json", "scaling", scaling),
    "supervisor": ("supervisor.json", "flood", supervisor),
    "runtimes": ("runtimes.json", "runtimes", runtimes),
}


def render(text: str) -> tuple[str, list[str]]:
    done = []
    for name, (file, key, fn) in BLOCKS.items():
        data = _load(file)
        if data is None or (key and key not in data):
            continue
        pattern = re.compile(rf"(<!-- bench:{name} -->\n)(?:.*?\n)?(<!-- /bench:{name} -->)", re.S)
        if not pattern.search(text):
            continue
        body = fn(data)
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
        done.append(name)
    return text, done


def main() -> int:
    text, done = render(DOC.read_text())
    DOC.write_text(text)
    print(f"docs/PERFORMANCE.md: regenerated {', '.join(done) or 'nothing (no results)'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
