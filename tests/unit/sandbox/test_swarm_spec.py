"""The Swarm engine's pure parts: service spec from a ContainerSpec, run state from a task."""

from __future__ import annotations

import pytest

from dad_sandbox.run import RunStatus
from dad_sandbox.sandbox._classify import classify
from dad_sandbox.sandbox.engine import NODE_LOST, ContainerSpec, Mount
from dad_sandbox.sandbox.engine._swarm import UnsupportedOnSwarm, down_node_ids, service_spec, task_state


def spec(**changes) -> ContainerSpec:
    base = {
        "image": "img:1", "command": ("/usr/local/bin/dad-init", "--", "true"), "labels": {"dad.run_id": "r1"},
        "env": {"A": "1"}, "user": "0:0", "working_dir": "/dad/runs/r1",
        "mounts": (Mount("/shared/runs/r1", "/dad/runs/r1", read_only=False),),
        "tmpfs": {"/tmp": "size=67108864,mode=1777", "/dad/runs/r1/.trace": "ro,size=4k,mode=0555"},
        "cpus": 1.5, "memory": 64 << 20, "pids_limit": 50, "read_only_root": True, "cap_drop": ("ALL",),
        "cap_add": ("KILL",), "ulimits": {"fsize": 1024}, "placement": ("node.labels.sandbox==true",),
    }
    return ContainerSpec(**{**base, **changes})


def test_service_spec_carries_every_limit() -> None:
    """Limits, mounts, tmpfs, caps, ulimits, placement and labels all reach the service; restart is none."""
    out = service_spec(spec())
    tt = out["task_template"]
    cs = tt["ContainerSpec"]
    assert tt["Resources"]["Limits"] == {"NanoCPUs": 1_500_000_000, "MemoryBytes": 64 << 20, "Pids": 50}
    assert tt["RestartPolicy"]["Condition"] == "none" and out["mode"] == {"Replicated": {"Replicas": 1}}
    assert tt["Placement"] == {"Constraints": ["node.labels.sandbox==true"]}
    assert cs["ReadOnly"] is True and cs["CapabilityDrop"] == ["ALL"] and cs["CapabilityAdd"] == ["KILL"]
    assert cs["Ulimits"] == [{"Name": "fsize", "Soft": 1024, "Hard": 1024}]
    assert cs["StopSignal"] == "SIGKILL" and cs["Args"][0] == "/usr/local/bin/dad-init"
    assert {"Target": "/dad/runs/r1", "Source": "/shared/runs/r1", "Type": "bind", "ReadOnly": False} in cs["Mounts"]
    mask = next(m for m in cs["Mounts"] if m["Target"] == "/dad/runs/r1/.trace")
    assert mask["ReadOnly"] is True and mask["TmpfsOptions"] == {"SizeBytes": 4096, "Mode": 0o555}
    assert out["labels"] == {"dad.run_id": "r1"} and cs["Env"] == ["A=1"]


@pytest.mark.parametrize("changes", [
    {"seccomp_profile": "{}"}, {"network": "bridge"}, {"stdin_open": True}, {"runtime": "runsc"},
])
def test_what_a_service_cannot_carry_is_refused(changes) -> None:
    """A seccomp profile, a network, stdin or another runtime is refused, never dropped silently."""
    with pytest.raises(UnsupportedOnSwarm):
        service_spec(spec(**changes))


def task(state: str, *, exit_code=None, node="n1", desired="running", container="c1") -> dict:
    status = {"State": state, "Timestamp": "2026-12-05T10:00:00.123456789Z"}
    if exit_code is not None:
        status["ContainerStatus"] = {"ContainerID": container, "ExitCode": exit_code}
    return {"NodeID": node, "DesiredState": desired, "Status": status, "CreatedAt": "2026-12-05T10:00:00Z"}


@pytest.mark.parametrize(("the_task", "down", "expected"), [
    (task("complete", exit_code=0), frozenset(), (RunStatus.COMPLETED, None)),
    (task("failed", exit_code=3), frozenset(), (RunStatus.FAILED, "exit_code")),
    (task("failed", exit_code=137), frozenset(), (RunStatus.CRASHED, "signal:SIGKILL")),
    (task("running"), frozenset({"n1"}), (RunStatus.CRASHED, "node_lost")),
    (task("orphaned"), frozenset(), (RunStatus.CRASHED, "node_lost")),
    (task("rejected"), frozenset(), (RunStatus.CRASHED, "engine_error")),
    (task("pending", desired="shutdown"), frozenset(), (RunStatus.CRASHED, "engine_error")),
])
def test_task_state_classifies(the_task, down, expected) -> None:
    """A task's state, exit code and node decide the run's status through the shared classifier."""
    assert classify(task_state("svc", {}, the_task, down)) == expected


def test_running_task_on_a_ready_node_is_running_and_lost_node_says_so() -> None:
    """A running task is running; the same task on a node that is down is node_lost with a message."""
    assert task_state("svc", {}, task("running"), frozenset()).running
    lost = task_state("svc", {}, task("running"), frozenset({"n1"}))
    assert lost.status == NODE_LOST and not lost.running and "left the cluster" in (lost.error or "")


def test_oom_is_not_claimed_but_explained() -> None:
    """Exit 137 is not reported as oom_killed (Swarm cannot tell) but the error names the likely cause."""
    state = task_state("svc", {}, task("failed", exit_code=137), frozenset())
    assert not state.oom_killed and "OOM" in (state.error or "")


def test_down_node_ids() -> None:
    """Nodes that are down, unknown or disconnected count as gone; ready ones do not."""
    nodes = [{"ID": "a", "Status": {"State": "ready"}}, {"ID": "b", "Status": {"State": "down"}},
             {"ID": "c", "Status": {"State": "disconnected"}}, {"ID": "d"}]
    assert down_node_ids(nodes) == frozenset({"b", "c", "d"})


def test_log_frames_are_read_in_bounded_pieces() -> None:
    """A frame announcing a huge size is read in 64 KiB pieces, tagged with its stream, and a short stream just ends."""
    import io
    import struct

    from dad_sandbox.sandbox.engine._swarm import _frames

    big = b"x" * 200_000
    data = bytes([1, 0, 0, 0]) + struct.pack(">I", len(big)) + big + bytes([2, 0, 0, 0]) + struct.pack(">I", 3) + b"err"
    pieces = list(_frames(io.BytesIO(data + bytes([1, 0, 0, 0]) + struct.pack(">I", 1 << 31) + b"cut")))
    assert max(len(p) for _, p in pieces) <= 64 << 10
    assert b"".join(p for s, p in pieces if s == 1) == big + b"cut"
    assert [p for s, p in pieces if s == 2] == [b"err"]


def test_policy_placement_is_checked_and_reaches_the_spec(tmp_path) -> None:
    """A placement constraint must look like 'node.labels.x==y'; a valid one reaches the container spec."""
    from dad_sandbox import load_policy
    from dad_sandbox.errors import PolicyError

    policy = load_policy("untrusted").with_overrides(placement=["node.labels.sandbox==true", "node.role!=manager"])
    assert policy.placement == ["node.labels.sandbox==true", "node.role!=manager"]
    with pytest.raises(PolicyError, match="placement"):
        load_policy("untrusted").with_overrides(placement=["sandbox; rm -rf /"])


def test_engine_selection(monkeypatch) -> None:
    """DAD_SANDBOX_ENGINE picks the Swarm engine, defaults to Docker, and refuses an unknown name with the choices."""
    from dad_sandbox.errors import EngineUnavailable
    from dad_sandbox.sandbox.engine._docker import DockerEngine
    from dad_sandbox.sandbox.engine._select import default_engine
    from dad_sandbox.sandbox.engine._swarm import SwarmEngine

    monkeypatch.delenv("DAD_SANDBOX_ENGINE", raising=False)
    assert isinstance(default_engine(), DockerEngine)
    monkeypatch.setenv("DAD_SANDBOX_ENGINE", "swarm")
    assert isinstance(default_engine(), SwarmEngine)
    monkeypatch.setenv("DAD_SANDBOX_ENGINE", "nomad")
    with pytest.raises(EngineUnavailable, match="docker, swarm"):
        default_engine()
