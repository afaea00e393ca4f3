"""The Run System: run ids, directories, metadata, static inputs. Pure Python, no container engine.

Other layers and tools use this package's names (``find_run``, ``list_runs``, ``iter_jsonl``, …),
not its private modules.

Names are imported on first use, so importing one private module of this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dad_sandbox._lazy import lazy_getattr

_EXPORTS = {
    "LOGS_FILE": "dad_sandbox.run._layout",
    "OutputInfo": "dad_sandbox.run._metadata",
    "RerunInfo": "dad_sandbox.run._metadata",
    "RunContext": "dad_sandbox.run._context",
    "RunEnvParams": "dad_sandbox.run._env_params",
    "RunLayout": "dad_sandbox.run._layout",
    "RunMetadata": "dad_sandbox.run._metadata",
    "RunReason": "dad_sandbox.run._status",
    "RunStatus": "dad_sandbox.run._status",
    "StaticInputs": "dad_sandbox.run._static_inputs",
    "TERMINAL_STATUSES": "dad_sandbox.run._status",
    "TRACE_FILE": "dad_sandbox.run._layout",
    "check_element_id": "dad_sandbox.run._layout",
    "combine_status": "dad_sandbox.run._status",
    "find_run": "dad_sandbox.run._runs",
    "is_known_reason": "dad_sandbox.run._status",
    "is_valid_run_id": "dad_sandbox.run._ids",
    "iter_jsonl": "dad_sandbox.run._jsonl",
    "list_runs": "dad_sandbox.run._runs",
    "new_run_id": "dad_sandbox.run._ids",
    "read_metadata": "dad_sandbox.run._metadata",
}

__all__ = [
    "LOGS_FILE",
    "OutputInfo",
    "RerunInfo",
    "RunContext",
    "RunEnvParams",
    "RunLayout",
    "RunMetadata",
    "RunReason",
    "RunStatus",
    "StaticInputs",
    "TERMINAL_STATUSES",
    "TRACE_FILE",
    "check_element_id",
    "combine_status",
    "find_run",
    "is_known_reason",
    "is_valid_run_id",
    "iter_jsonl",
    "list_runs",
    "new_run_id",
    "read_metadata",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS)


if TYPE_CHECKING:
    from dad_sandbox.run._context import RunContext
    from dad_sandbox.run._env_params import RunEnvParams
    from dad_sandbox.run._ids import is_valid_run_id, new_run_id
    from dad_sandbox.run._jsonl import iter_jsonl
    from dad_sandbox.run._layout import LOGS_FILE, TRACE_FILE, RunLayout, check_element_id
    from dad_sandbox.run._metadata import OutputInfo, RerunInfo, RunMetadata, read_metadata
    from dad_sandbox.run._runs import find_run, list_runs
    from dad_sandbox.run._static_inputs import StaticInputs
    from dad_sandbox.run._status import TERMINAL_STATUSES, RunReason, RunStatus, combine_status, is_known_reason
