"""Run the hello agent exactly as the DAD docs' lifecycle shows, with dad_sandbox imports.

    python -m examples.hello.run        (from the repository root; `make run` does this)
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from dad_sandbox import AgentRunner, IsolatedExecution, RunContext
from examples.hello.agent import GreetInput, hello_agent


async def main() -> int:
    run_context = RunContext(
        root_component_id="hello",
        project_root=Path("."),
        run_root=Path("./runs"),
        observability_settings=None,
        previous_run_id=None,
        start_hierarchy_path=None,
    )
    try:
        run_context.setup_run(run_id_prefix="hello")
        run_context.register_node_static_input("greet", GreetInput(name="sandbox", times=2))
        run_context.read_static_inputs()
        runner = AgentRunner(hello_agent, run_context)
        async with IsolatedExecution(run_context, policy="untrusted") as execution:
            result = await execution.run(runner)
        run_context.complete_run(status="completed")
    except Exception as e:
        if run_context.is_set_up:
            run_context.complete_run(status="failed", error_msg=str(e))
        raise

    print(f"run       {result.run_id}")
    print(f"status    {result.status.value}" + (f" ({result.reason})" if result.reason else ""))
    print(f"duration  {result.duration_seconds:.3f}s in its own container (policy untrusted)")
    print(f"run dir   {result.run_dir}")
    for node in result.nodes:
        print(f"  {node['hierarchy_path']:<28} {node['status']:<10} {node['output']}")
    if result.error:
        print(f"error     {result.error}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
