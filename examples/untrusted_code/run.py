"""Run the untrusted-code agent in its sandbox:  python -m examples.untrusted_code.run ["CODE"]"""

from __future__ import annotations

import sys

from dad_sandbox.sync import run_component


def main() -> int:
    result = run_component("examples.untrusted_code.agent:untrusted_agent", policy="untrusted", run_root="runs")
    print(f"{result.run_id}: {result.status.value}")
    for node in result.nodes:
        print(f"  {node['hierarchy_path']:<32} {node['status']}")
    if result.error:
        print(result.error)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
