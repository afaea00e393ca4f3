"""Shared fixtures: a throwaway project with an importable component package."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

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
