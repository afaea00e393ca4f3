"""The Run System: run ids, directories, metadata, static inputs. Pure Python, no container engine."""

from dad_sandbox.run._context import RunContext
from dad_sandbox.run._env_params import RunEnvParams
from dad_sandbox.run._ids import is_valid_run_id, new_run_id
from dad_sandbox.run._layout import RunLayout, check_element_id
from dad_sandbox.run._metadata import OutputInfo, RerunInfo, RunMetadata, read_metadata
from dad_sandbox.run._static_inputs import StaticInputs
from dad_sandbox.run._status import TERMINAL_STATUSES, RunStatus, combine_status

__all__ = [
    "TERMINAL_STATUSES",
    "OutputInfo",
    "RerunInfo",
    "RunContext",
    "RunEnvParams",
    "RunLayout",
    "RunMetadata",
    "RunStatus",
    "StaticInputs",
    "check_element_id",
    "combine_status",
    "is_valid_run_id",
    "new_run_id",
    "read_metadata",
]
