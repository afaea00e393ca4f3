"""A three-step pipeline for the re-run demo: fetch (slow, "expensive"), transform, report.

Re-running from ``pipeline.main.transform`` loads ``fetch`` from the previous run instead of paying
for it again; ``transform`` and ``report`` run anew.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from dad_sandbox import AgentDefinition, FlowDefinition, NodeContext


class TransformInput(BaseModel):
    factor: int = 2


def fetch(ctx: NodeContext) -> dict[str, object]:
    time.sleep(1.0)  # pretend this is an expensive call (an LLM, a download)
    return {"values": [1, 2, 3, 4], "fetched_at": time.time()}


def transform(ctx: NodeContext) -> dict[str, object]:
    assert isinstance(ctx.input, TransformInput)
    return {"values": [v * ctx.input.factor for v in ctx.results["fetch"]["values"]]}


def report(ctx: NodeContext) -> dict[str, str]:
    return {"report.txt": f"sum = {sum(ctx.results['transform']['values'])}\n"}


pipeline = AgentDefinition(
    "pipeline",
    flows=[FlowDefinition("main").node("fetch", fetch).node("transform", transform, input_model=TransformInput)
           .file("report", report)],
)
