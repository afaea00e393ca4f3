"""The pure parts of the Swarm run-root probe: one task's verdict and the message a run ends with."""

from __future__ import annotations

from pathlib import Path

from dad_sandbox.sandbox.engine._swarm_probe import NodeView, failure_message, verdict


def task(state: str, code: int | None = None, err: str | None = None, cid: str | None = "c1") -> dict:
    status: dict = {"State": state, "Err": err}
    if code is not None or cid:
        status["ContainerStatus"] = {"ExitCode": code, "ContainerID": cid}
    return {"Status": status}


def test_verdicts() -> None:
    assert verdict(task("complete", 0)) == (True, "sees the run root")
    assert verdict(task("failed", 1)) == (False, "sees other content at the run root's path (not the shared storage)")
    ok, detail = verdict(task("rejected", err="invalid mount config: bind source path does not exist: /x", cid=None))
    assert not ok and detail == "rejected: invalid mount config: bind source path does not exist: /x"
    ok, detail = verdict(task("failed", 137, "killed"))
    assert not ok and "exit 137" in detail


def test_failure_message_names_the_bad_nodes_and_the_fix() -> None:
    root = Path("/shared/runs")
    good = NodeView("a", "node-1", True, "sees the run root")
    bad = NodeView("b", "node-2", False, "rejected: no such path")
    assert failure_message(root, [good]) is None
    message = failure_message(root, [good, bad]) or ""
    assert "node-2: rejected: no such path" in message and "node-1" not in message
    assert "Mount the shared storage at /shared/runs on node-2" in message
    assert "no Swarm node took" in (failure_message(root, []) or "")
