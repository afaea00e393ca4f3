"""bench/compare.py flags figures that got worse in the right direction; render_doc fills only its blocks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_direction_comes_from_the_figure_name() -> None:
    compare = _load("compare")
    assert compare.direction("throughput.8.dad_cold.runs_per_s") == 1
    assert compare.direction("cold.docker_sdk.p50_ms") == -1
    assert compare.direction("ratios.run_command_vs_sdk") == -1
    assert compare.direction("flood.supervisor_peak_rss_mib") == -1
    assert compare.direction("cold.docker_sdk.n") == 0


def test_only_worse_beyond_the_threshold_is_flagged() -> None:
    compare = _load("compare")
    old = {"machine": {"cpus": 2}, "cold": {"a": {"p50_ms": 100.0, "n": 30}}, "tp": {"runs_per_s": 10.0},
           "scaling": [{"concurrent": 1, "wall_s": 1.0}]}
    new = {"machine": {"cpus": 4}, "cold": {"a": {"p50_ms": 115.0, "n": 10}}, "tp": {"runs_per_s": 9.5},
           "scaling": [{"concurrent": 1, "wall_s": 0.5}]}
    rows, worse = compare.compare(old, new, 0.10)
    flags = {row[0]: row[4] for row in rows}
    assert worse == 1 and flags["cold.a.p50_ms"] == "WORSE"
    assert flags["tp.runs_per_s"] == "" and flags["scaling[concurrent=1].wall_s"] == "better"
    assert "machine.cpus" not in flags and flags["cold.a.n"] == ""


def test_render_replaces_only_marked_blocks(tmp_path: Path, monkeypatch) -> None:
    render_doc = _load("render_doc")
    monkeypatch.setattr(render_doc, "RESULTS", tmp_path)
    (tmp_path / "perf.json").write_text('{"deadline_late": {"n": 3, "p50_ms": 70, "p90_ms": 80, "p99_ms": 90}}')
    text = "prose\n<!-- bench:deadline -->\nold figure\n<!-- /bench:deadline -->\n<!-- bench:cold -->\nkept\n<!-- /bench:cold -->\n"
    out, done = render_doc.render(text)
    assert done == ["deadline"]
    assert "old figure" not in out and "p50 **70 ms**" in out and "kept" in out and out.startswith("prose\n")
