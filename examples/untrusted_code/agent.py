"""An agent that runs Python code it was handed - as an LLM would write it - in a command node.

The code arrives as a static input (``solve.code``); the command node runs it with ``python3 -c``
inside the sandbox under the ``untrusted`` policy. A function node then checks the answer, and a
file node keeps the code and its output as outcomes (committed to the outcome repository).
"""

from __future__ import annotations

from pydantic import BaseModel

from dad_sandbox import AgentDefinition, FlowDefinition, NodeContext

LLM_WRITTEN_CODE = '''
import math
primes = [n for n in range(2, 100) if all(n % d for d in range(2, int(math.sqrt(n)) + 1))]
print(sum(primes))
'''


class CodeInput(BaseModel):
    code: str = LLM_WRITTEN_CODE
    expected: str = "1060"


def run_code(ctx: NodeContext) -> list[str]:
    assert isinstance(ctx.input, CodeInput)
    return ["python3", "-c", ctx.input.code]


def check(ctx: NodeContext) -> dict[str, object]:
    out = ctx.results["solve"]["stdout"].strip()
    expected = CodeInput().expected
    return {"answer": out, "expected": expected, "correct": out == expected}


def keep(ctx: NodeContext) -> dict[str, str]:
    solve = ctx.results["solve"]
    return {"solution.py": " ".join(solve["argv"][2:]), "answer.txt": solve["stdout"]}


flow = (
    FlowDefinition("main")
    .command("solve", run_code, input_model=CodeInput, timeout=30)
    .node("check", check)
    .file("keep", keep)
)
untrusted_agent = AgentDefinition("untrusted_code", flows=[flow])
