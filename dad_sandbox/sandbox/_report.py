"""Reading what the in-container runner reports about a component run: hostile data, validated.

The report is written by the run, so nothing in it is trusted: the host takes only a known
``kind`` (to name the run's reason) and a well-formed component id, and ignores everything else.
Never raises.
"""

from __future__ import annotations

from typing import Any

from dad_sandbox.run._layout import ELEMENT_ID_RE
from dad_sandbox.run._status import RunReason

#: Reasons a failed component run can get from its report; each one means "nothing ran" except node_failed.
REPORT_REASONS = frozenset({RunReason.COMPONENT_LOAD, RunReason.INVALID_INPUTS, RunReason.RERUN_TARGET,
                            RunReason.NODE_FAILED, RunReason.COMPONENT_ERROR})
#: Reasons that mean the request was refused before any node ran (the CLI exits 7 for them).
REQUEST_REASONS = frozenset({RunReason.COMPONENT_LOAD, RunReason.INVALID_INPUTS, RunReason.RERUN_TARGET,
                             RunReason.INVALID_REQUEST})


def report_reason(report: dict[str, Any] | None) -> RunReason | None:
    """The reason a failed component run gets from its report, or None when the report says nothing usable."""
    if not isinstance(report, dict):
        return None
    kind = report.get("kind")
    if isinstance(kind, str) and kind in REPORT_REASONS:
        return RunReason(kind)
    if report.get("failed_path"):
        return RunReason.NODE_FAILED
    if report.get("status") == "failed":
        return RunReason.COMPONENT_LOAD
    return None


def reported_component_id(report: dict[str, Any] | None) -> str | None:
    """The component's id as the container found it, if it is a valid element id."""
    component = report.get("component") if isinstance(report, dict) else None
    cid = component.get("id") if isinstance(component, dict) else None
    return cid if isinstance(cid, str) and len(cid) <= 200 and ELEMENT_ID_RE.match(cid) else None
