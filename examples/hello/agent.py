"""The hello agent: three function nodes in one flow, run in a container by `make run`."""

from __future__ import annotations

import platform

from pydantic import BaseModel

from dad_sandbox import AgentDefinition, FlowDefinition, NodeContext


class GreetInput(BaseModel):
    name: str = "world"
    times: int = 1


def greet(ctx: NodeContext) -> dict[str, str]:
    assert isinstance(ctx.input, GreetInput)
    return {"greeting": " ".join([f"hello {ctx.input.name}"] * ctx.input.times)}


def inspect_sandbox(ctx: NodeContext) -> dict[str, object]:
    """Look around: who are we, what network do we have, can we write the project?"""
    import os
    from pathlib import Path

    try:
        Path("/dad/project/should_not_exist").write_text("x")
        project_writable = True
    except OSError:
        project_writable = False
    return {
        "uid": os.getuid(),
        "python": platform.python_version(),
        "network_interfaces": sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else [],
        "project_writable": project_writable,
    }


def write_report(ctx: NodeContext) -> dict[str, str]:
    greeting = ctx.results["greet"]["greeting"]
    report = ctx.node_dir / "report.txt"
    report.write_text(f"{greeting}\nsandbox: {ctx.results['inspect_sandbox']}\n", encoding="utf-8")
    return {"report": str(report.name), "words": str(len(greeting.split()))}


hello_flow = (
    FlowDefinition("main")
    .node("greet", greet, input_model=GreetInput)
    .node("inspect_sandbox", inspect_sandbox)
    .node("write_report", write_report)
)

hello_agent = AgentDefinition("hello", flows=[hello_flow])
