"""One real inspect_ai task end to end: a scripted model calls a tool that runs code in a dad-sandbox session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("inspect_ai", reason="the inspect extra is not installed: pip install 'dad-sandbox[inspect]'")

from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.model import ModelOutput, get_model
from inspect_ai.scorer import includes
from inspect_ai.solver import generate, use_tools
from inspect_ai.tool import Tool, tool
from inspect_ai.util import SandboxEnvironmentSpec, sandbox

from dad_sandbox.inspect_provider import DadSandboxConfig
from dad_sandbox.run import RunStatus, read_metadata


@tool
def run_python() -> Tool:
    async def execute(code: str) -> str:
        """Run Python code in the sandbox and return what it printed.

        Args:
            code: the Python program to run.
        """
        result = await sandbox().exec(["python3", "-c", code])
        return result.stdout + result.stderr

    return execute


def test_inspect_task_runs_its_tool_in_a_session(tmp_path: Path, docker_api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mock model's tool call runs python3 in our sandbox; the answer scores, and the session run is recorded."""
    from inspect_ai.model._providers.mockllm import MockLLM

    async def count_text_tokens(self, text: str) -> int:  # tiktoken would download its tables: no network here
        return len(text) // 4 + 1

    monkeypatch.setattr(MockLLM, "count_text_tokens", count_text_tokens)
    project, runs = tmp_path / "project", tmp_path / "runs"
    project.mkdir()
    model = get_model("mockllm/model", custom_outputs=[
        ModelOutput.for_tool_call(model="mockllm/model", tool_name="run_python",
                                  tool_arguments={"code": "import os; print(6 * 7, os.getuid() != 0)"}),
        ModelOutput.from_content(model="mockllm/model", content="The answer is 42"),
    ])
    task = Task(
        dataset=[Sample(input="What is six times seven? Use the tool.", target="42")],
        solver=[use_tools([run_python()]), generate()],
        scorer=includes(),
        sandbox=SandboxEnvironmentSpec("dad-sandbox", DadSandboxConfig(policy="untrusted", timeout="5m",
                                                                       project_root=str(project), run_root=str(runs))),
    )
    (log,) = eval(task, model=model, log_dir=str(tmp_path / "logs"), display="none")
    assert log.status == "success", log.error
    sample = log.samples[0]
    tool_messages = [m for m in sample.messages if m.role == "tool"]
    assert tool_messages and tool_messages[0].text.strip() == "42 True"
    assert sample.scores["includes"].value == "C"
    (run_dir,) = [d for d in runs.iterdir() if d.name.startswith("inspect_run_")]
    assert read_metadata(run_dir).status == RunStatus.COMPLETED
    spans = [json.loads(x) for x in (run_dir / ".trace" / "trace.jsonl").read_text().splitlines()]
    assert any("6 * 7" in sp["attributes"]["dad.exec.argv"] for sp in spans)
