"""The reasons a run ends with: one enum next to RunStatus, JSON values fixed by contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dad_sandbox.run import RunReason, RunStatus, is_known_reason
from dad_sandbox.run._metadata import NOT_RECORDED, RecordFields, RunMetadata
from dad_sandbox.run._status import signal_reason
from dad_sandbox.sandbox._classify import classify, signal_name

#: The values in dad_metadata.json (contract): renaming a member must not change one of them.
CONTRACT = {
    "exit_code", "preflight", "invalid_request", "node_failed", "component_load", "component_error",
    "runner_report", "invalid_inputs", "rerun_target", "image_missing", "disk_quota", "file_quota",
    "deadline", "oom", "oom:child", "cancelled", "interrupted", "engine_lost", "engine_error",
    "node_lost", "supervisor_lost",
}

README = Path(__file__).resolve().parents[3] / "README.md"


def test_reason_values_are_the_contract() -> None:
    """The enum's values are exactly the documented ones, so existing metadata keeps its meaning."""
    assert {r.value for r in RunReason} == CONTRACT


def test_every_fixed_reason_is_in_the_readme_status_table() -> None:
    """Each reason appears in README's status table (users look it up there), the signal pattern too."""
    table = README.read_text(encoding="utf-8").split("| status | reason | detected by |", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"`([a-z_:]+)`", table))
    missing = CONTRACT - documented
    assert not missing, f"README's status table lacks {sorted(missing)}"
    assert "`signal:SIGxxx`" in table


def test_signal_reasons_follow_the_pattern() -> None:
    """Open-ended signal reasons are built one way and recognised; anything else is refused."""
    assert signal_reason("SIGSEGV") == "signal:SIGSEGV"
    assert signal_reason(signal_name(70)) == "signal:SIG70"
    assert is_known_reason("signal:SIGKILL") and is_known_reason("oom:child")
    assert not is_known_reason("signal:kill") and not is_known_reason("made_up")
    with pytest.raises(ValueError):
        signal_reason("SIGSEGV; rm -rf /")


def test_a_reason_is_written_as_its_plain_value() -> None:
    """In the JSON a reason is the bare string, the same bytes as before the enum existed."""
    md = RunMetadata(run_id="run_20260101_000000_abcdef", root_component_id="a", project_root="/p",
                     reason=RunReason.OOM_CHILD)
    assert '"reason": "oom:child"' in md.model_dump_json(indent=1).replace('":"', '": "')
    assert type(RunMetadata.model_validate_json(md.model_dump_json()).reason) is str


def test_record_fields_cover_the_metadata() -> None:
    """record(**fields) is typed by RecordFields: it names every metadata field but the ones record owns."""
    assert set(RecordFields.__annotations__) == set(RunMetadata.model_fields) - NOT_RECORDED
    assert set(RunMetadata.model_fields) >= NOT_RECORDED


def test_classify_gives_enum_reasons() -> None:
    """The classifier's fixed reasons are members of the enum; a signal one follows the pattern."""
    from datetime import UTC, datetime

    from dad_sandbox.sandbox.engine import ContainerState

    def state(code: int, oom: bool = False) -> ContainerState:
        return ContainerState(id="c", status="exited", running=False, exit_code=code, oom_killed=oom,
                              started_at=datetime.now(UTC), finished_at=datetime.now(UTC), image_id="x")

    assert classify(state(1)) == (RunStatus.FAILED, RunReason.EXIT_CODE)
    assert classify(state(0, oom=True)) == (RunStatus.OOM_KILLED, RunReason.OOM_CHILD)
    status, reason = classify(state(139))
    assert status == RunStatus.CRASHED and reason == "signal:SIGSEGV" and is_known_reason(reason)
