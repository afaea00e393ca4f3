"""Run the pipeline, then re-run it from ``transform`` with another factor; ``fetch`` is not paid again.

    python -m examples.rerun_demo.run
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from dad_sandbox.sync import run_component

REF = "examples.rerun_demo.agent:pipeline"


def main() -> int:
    first = run_component(REF, run_root="runs")
    print(f"first run  {first.run_id}: {first.status.value} in {first.duration_seconds:.2f}s")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"transform": {"factor": 10}}, fh)
    again = run_component(REF, run_root="runs", previous_run_id=first.run_id,
                          start_hierarchy_path="pipeline.main.transform", static_inputs_file=Path(fh.name))
    print(f"re-run     {again.run_id}: {again.status.value} in {again.duration_seconds:.2f}s")
    for node in again.nodes:
        print(f"  {node['hierarchy_path']:<28} {node['status']:<10} {node['output']}")
    print(f"compare:   dad-sandbox runs diff {first.run_id} {again.run_id}")
    return 0 if first.ok and again.ok else 1


if __name__ == "__main__":
    sys.exit(main())
