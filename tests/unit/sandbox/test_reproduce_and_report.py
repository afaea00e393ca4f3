"""Re-run/replay planning from recorded metadata, and reading the runner report as hostile data."""

from __future__ import annotations

import asyncio

import pytest

from dad_sandbox import load_policy
from dad_sandbox.errors import ImageNotFound, PolicyError
from dad_sandbox.run import RunMetadata
from dad_sandbox.sandbox._report import report_reason, reported_component_id
from dad_sandbox.sandbox._reproduce import check_image_present, plan
from dad_sandbox.testing import FakeEngine

IMAGE_ID = "sha256:" + "ab" * 32


def recorded(policy_name: str | None = "default", image_id: str | None = IMAGE_ID) -> RunMetadata:
    policy = load_policy(policy_name) if policy_name else None
    return RunMetadata(run_id="run_20261128_000000_aaaaaa", root_component_id="a", project_root="/p",
                       policy_name=policy.name if policy else None, policy=policy.model_dump(mode="json") if policy else None,
                       image="dad-sandbox-runner:0.1.0", image_id=image_id,
                       execution="isolated" if policy else "in_process")


def test_default_is_the_recorded_policy_and_image_id() -> None:
    """Without overrides a re-run gets the recorded policy (memory and all) pinned to the recorded image id."""
    r = plan(recorded())
    assert r.policy.name == "default" and r.policy.memory == load_policy("default").memory
    assert r.policy.image == IMAGE_ID and r.pinned_image_id == IMAGE_ID
    assert any("as recorded" in n for n in r.notes)


def test_overrides_are_said() -> None:
    """--policy, --image and --timeout replace the recorded values and each adds a note."""
    r = plan(recorded(), policy="untrusted", image="other:tag", timeout=5)
    assert (r.policy.name, r.policy.image, r.policy.timeout, r.pinned_image_id) == ("untrusted", "other:tag", 5, None)
    text = " ".join(r.notes)
    assert "from --policy" in text and "from --image" in text and "from --timeout" in text


def test_in_process_run_falls_back_to_untrusted_and_says_so() -> None:
    """A run that recorded no policy (in-process) is re-run under untrusted, by image name, with notes saying why."""
    r = plan(recorded(policy_name=None, image_id=None))
    assert r.policy.name == "untrusted" and r.pinned_image_id is None
    assert "recorded no policy" in r.notes[0] and "recorded no image id" in r.notes[1]


def test_recorded_policy_that_no_longer_validates_is_a_policy_error() -> None:
    """A recorded policy with an unknown key is refused with advice, not a traceback."""
    md = recorded().model_copy(update={"policy": {"image": "x", "bogus": 1}})
    with pytest.raises(PolicyError, match="--policy"):
        plan(md)


def test_missing_image_id_is_a_clear_error() -> None:
    """A pinned image id the engine does not have raises ImageNotFound naming the run and --image."""
    with pytest.raises(ImageNotFound, match="no longer on this engine.*--image"):
        asyncio.run(check_image_present(FakeEngine(images={"dad-sandbox-runner:0.1.0"}), plan(recorded())))
    asyncio.run(check_image_present(FakeEngine(images={IMAGE_ID}), plan(recorded())))  # present: no error


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        ({"kind": "invalid_inputs"}, "invalid_inputs"),
        ({"kind": "rerun_target"}, "rerun_target"),
        ({"kind": "made_up", "failed_path": "a.b"}, "node_failed"),
        ({"kind": ["invalid_inputs"], "status": "failed"}, "component_load"),
        ({"status": "completed"}, None),
        (None, None),
        ([1, 2], None),
    ],
)
def test_report_reason_takes_only_known_kinds(report, reason) -> None:
    """Only a known kind names the reason; anything else the run wrote falls back or is ignored."""
    assert report_reason(report) == reason


@pytest.mark.parametrize(
    ("component", "expected"),
    [({"id": "agent_1"}, "agent_1"), ({"id": "../x"}, None), ({"id": "a" * 500}, None), ({"id": 5}, None), ("x", None)],
)
def test_reported_component_id_is_validated(component, expected) -> None:
    """The component id is taken only when it is a valid, short element id."""
    assert reported_component_id({"component": component}) == expected
