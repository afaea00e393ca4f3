"""The in-container entrypoint: ``python3 -m dad_sandbox.sandbox._entrypoint``.

It rebuilds the RunContext from the request in ``$DAD_RUN_REQUEST`` (container-side paths),
imports the component by reference - the only place dad-sandbox ever imports project code -,
checks the request against it (:func:`~dad_sandbox.runner._preflight.preflight`: re-run start
path, static inputs with their types) BEFORE any node runs, runs it, and writes the runner report.
It never writes the final status: the host supervisor does, from the container's exit code and
state, reading the report as untrusted data.

The report always says what kind of ending it was, so the host can name the reason:

====================  ====  ==============================================================
``kind``              exit  meaning
====================  ====  ==============================================================
``completed``         0     every node ran (or was loaded) and none failed
``node_failed``       1     a node failed
``component_error``   1     the component failed outside a node (a loop's items, a predicate)
``rerun_target``      1     a part to load is missing from the previous run (nothing executed)
``component_load``    2     the request or the component could not be loaded
``invalid_inputs``    3     a static input does not fit its node (nothing ran)
``rerun_target``      3     the re-run start path matches no element (nothing ran)
====================  ====  ==============================================================

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
EXIT_INVALID_REQUEST = 3

#: Report kinds the host maps to a run's reason (anything else the run writes is ignored there).
KIND_COMPONENT_LOAD = "component_load"
KIND_INVALID_INPUTS = "invalid_inputs"
KIND_RERUN_TARGET = "rerun_target"


def _not_dumpable() -> None:
    """Keep the commands a component starts from reading the runner (``/proc/<pid>/environ``, its
    memory, its stderr through ``/proc/<pid>/fd/2``): a non-dumpable process can be traced or
    inspected by no other process of the same uid. Best effort: without libc nothing changes."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        pass


def _layout_of(env_params: dict[str, Any]) -> Any:
    """The run's layout as the container sees it (spans and report go to ``.runner/``), built
    before anything else can fail."""
    from dad_sandbox.run._layout import RUNNER_DIR, RunLayout

    run_dir = Path(env_params["run_dir"])
    trace_dir = Path(env_params.get("trace_dir") or run_dir / RUNNER_DIR)
    return RunLayout(run_dir.parent, str(env_params["run_id"]), Path(env_params["outcome_repo_dir"]).name,
                     run_dir.name, trace_dir.name)


def _write_report(layout: Any, report: dict[str, Any]) -> None:
    """The runner's account, in the container's own trace folder (``.runner/``): the host validates it."""
    with open(layout.runner_report_file, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, default=str)


def _refuse(layout: Any, kind: str, message: str, detail: str, component: dict[str, Any] | None) -> None:
    """Report a request that cannot run: one line for the user, the traceback on stderr (logs.jsonl)."""
    print(f"dad-sandbox: {message}\n{detail}", file=sys.stderr)
    _write_report(layout, {"status": "failed", "kind": kind, "error": message, "nodes": [], "component": component})


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
    layout = _layout_of(request["env_params"])
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
    except BaseException as exc:
        from dad_sandbox.errors import DadSandboxError

        what = str(exc) if isinstance(exc, DadSandboxError) else f"{type(exc).__name__}: {exc}"
        message = f"could not load the component {request.get('component')!r}: {what}"
        _refuse(layout, KIND_COMPONENT_LOAD, message.splitlines()[0], traceback.format_exc(), None)
        return EXIT_BAD_REQUEST
    from dad_sandbox.errors import RerunTargetError, StaticInputsError
    from dad_sandbox.runner._preflight import describe

    description = describe(component).to_json()
    try:
        runner.validate()
    except (RerunTargetError, StaticInputsError) as exc:
        kind = KIND_RERUN_TARGET if isinstance(exc, RerunTargetError) else KIND_INVALID_INPUTS
        _refuse(layout, kind, " ".join(str(exc).split()), "", description)
        return EXIT_INVALID_REQUEST
    result = asyncio.run(runner.execute())
    kind = result.reason or "completed"
    _write_report(layout, {**result.to_json(), "kind": kind, "component": description})
    return EXIT_COMPLETED if result.status == "completed" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
