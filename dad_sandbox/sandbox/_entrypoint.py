"""The in-container entrypoint: ``python3 -m dad_sandbox.sandbox._entrypoint``.

It rebuilds the RunContext from the request in ``$DAD_RUN_REQUEST`` (container-side paths),
imports the component by reference, runs it, and writes ``.trace/runner_report.json``. It never
writes the final status: the host supervisor does, from the container's exit code and state.

Exit codes: 0 completed, 1 a node failed, 2 the request or the component could not be loaded.
It uses only the run and runner layers (no engine), as DESIGN.md's layering requires.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_BAD_REQUEST = 2


def _write_report(trace_dir: Path, report: dict[str, Any]) -> None:
    """The runner's account, in the container's own trace folder (``.runner/``): the host validates it."""
    with open(trace_dir / "runner_report.json", "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, default=str)


def _not_dumpable() -> None:
    """Keep the commands a component starts from reading the runner (``/proc/<pid>/environ``, its
    memory, its stderr through ``/proc/<pid>/fd/2``): a non-dumpable process can be traced or
    inspected by no other process of the same uid. Best effort: without libc nothing changes."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        pass


def main() -> int:
    from dad_sandbox._logging import configure_logging

    raw = os.environ.pop("DAD_RUN_REQUEST", None)
    if not raw:
        print("dad-sandbox entrypoint: DAD_RUN_REQUEST is not set; this module runs inside a sandbox", file=sys.stderr)
        return EXIT_BAD_REQUEST
    request = json.loads(raw)
    _not_dumpable()
    # Records for the host carry the run's channel prefix; plain prints of the component do not.
    prefix = f"\x1edad:{request['channel']} " if request.get("channel") else ""
    configure_logging(json=True, stream=sys.stderr, line_prefix=prefix)
    trace_dir = Path(request["env_params"]["trace_dir"])
    try:
        from dad_sandbox.run import RunContext, RunEnvParams
        from dad_sandbox.runner import MetricsEmitter, import_component, runner_for

        project_root = request["project_root"]
        sys.path.insert(0, project_root)
        env = RunEnvParams.model_validate(request["env_params"])
        ctx = RunContext.attach(env, request["root_component_id"], project_root,
                                previous_run_id=request.get("previous_run_id"),
                                start_hierarchy_path=request.get("start_hierarchy_path"))
        component = import_component(request["component"])
        runner = runner_for(component, ctx, reference=request["component"])
        runner.metrics = MetricsEmitter.for_container(ctx.run_id, prefix)
        runner.validate()
    except Exception as exc:
        error = f"could not load the component: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        print(error, file=sys.stderr)
        _write_report(trace_dir, {"status": "failed", "error": error, "nodes": []})
        return EXIT_BAD_REQUEST
    result = asyncio.run(runner.execute())
    _write_report(trace_dir, result.to_json())
    return EXIT_COMPLETED if result.status == "completed" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
