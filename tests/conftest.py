"""Shared fixtures: a throwaway project with an importable component package."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

# `dad-sandbox exec` starts a resident supervisor on first use; a test's CLI must leave none behind,
# so no test starts one unless it asks for it (tests/integration/test_autostart.py, with a per-test socket).
os.environ["DAD_SANDBOX_AUTOSTART"] = "0"

COMPONENTS = textwrap.dedent(
    '''
    import os, time
    from pydantic import BaseModel
    from dad_sandbox import AgentDefinition, FlowDefinition

    class In(BaseModel):
        name: str
        count: int = 1

    def first(ctx):
        return {"hello": ctx.input.name, "count": ctx.input.count}

    def second(ctx):
        (ctx.node_dir / "extra.txt").write_text("made in " + ctx.hierarchy_path)
        return {"seen": ctx.results["first"]["hello"], "uid": os.getuid()}

    def explode(ctx):
        raise ValueError("kaboom from a node")

    def never(ctx):
        raise AssertionError("must not run after a failed node")

    def sleepy(ctx):
        time.sleep(60)

    ok_flow = FlowDefinition("work").node("first", first, input_model=In).node("second", second)
    ok_agent = AgentDefinition("agent", flows=[ok_flow])
    bad_agent = AgentDefinition(
        "bad", flows=[FlowDefinition("work").node("first", first, input_model=In).node("explode", explode).node("never", never)]
    )
    sleepy_flow = FlowDefinition("sleepy").node("sleep", sleepy)
    not_a_component = 42

    def counted(ctx):
        run_dir = os.environ.get("DAD_RUN_DIR") or str(ctx.node_dir.parents[len(ctx.hierarchy_path.split(".")) - 1])
        with open(os.path.join(run_dir, "executed.log"), "a") as fh:
            fh.write(ctx.hierarchy_path + "\\n")
        others = [d for d in os.listdir("/dad/runs") if os.path.join("/dad/runs", d) != run_dir] \
            if os.path.isdir("/dad/runs") else []
        writable = []
        for d in others:
            try:
                open(os.path.join("/dad/runs", d, "poke"), "w").close()
                writable.append(d)
            except OSError:
                pass
        return {"at": ctx.hierarchy_path, "previous_writable": writable, "saw": sorted(others)}

    counted_agent = AgentDefinition(
        "counted", flows=[FlowDefinition("main").node("a", counted).node("b", counted).node("c", counted)]
    )

    def loop_items(ctx):
        return ["x", "y"]

    everything = AgentDefinition("everything", flows=[
        FlowDefinition("main")
        .node("first", first, input_model=In)
        .command("cmd", ["python3", "-c", "print(6 * 7)"])
        .file("files", lambda ctx: {"answer.txt": "42\\n"})
        .for_each("loop", loop_items, FlowDefinition("body").node("echo", lambda ctx: ctx.item.upper()))
        .conditional("cond", lambda ctx: ctx.results["cmd"]["stdout"].strip() == "42",
                     FlowDefinition("yes").node("fine", lambda ctx: "yes"),
                     FlowDefinition("no").node("odd", lambda ctx: "no"))
    ])
    '''
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project root holding the package ``sbx_components`` (importable on the host and in the container)."""
    root = tmp_path / "project"
    pkg = root / "sbx_components"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "flows.py").write_text(COMPONENTS)
    (root / "sentinel.txt").write_text("host data")
    root.chmod(0o755)
    tmp_path.chmod(0o755)
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m.startswith("sbx_components")]:
        del sys.modules[name]
    yield root
    for name in [m for m in sys.modules if m.startswith("sbx_components")]:
        del sys.modules[name]
