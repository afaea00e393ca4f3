"""Render the red-team results (build/security/results-<runtime>.json, written by the security
suite) into the attack table of docs/SECURITY.md, between its markers.

    python scripts/security_report.py        (or: make security-doc)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "SECURITY.md"
BEGIN, END = "<!-- attacks:begin -->", "<!-- attacks:end -->"


def main() -> int:
    results = {}
    for path in sorted((ROOT / "build" / "security").glob("results-*.json")):
        results[path.stem.removeprefix("results-")] = {r["attack"]: r for r in json.loads(path.read_text())}
    if not results:
        print("no results: run the security suite first (make security)", file=sys.stderr)
        return 1
    runtimes = sorted(results)
    attacks = sorted({a for rows in results.values() for a in rows})
    lines = ["| attack | defended by | " + " | ".join(f"{rt}: status (reason)" for rt in runtimes) + " |",
             "|---|---|" + "---|" * len(runtimes)]
    for attack in attacks:
        any_row = next(results[rt][attack] for rt in runtimes if attack in results[rt])
        cells = []
        for rt in runtimes:
            row = results[rt].get(attack)
            if row is None:
                cells.append("not run")
            else:
                mark = "contained" if row["contained"] else "**NOT CONTAINED**"
                reason = f" ({row['reason']})" if row.get("reason") else ""
                cells.append(f"{row['status']}{reason}, {mark}")
        lines.append(f"| {attack} | {any_row['defended_by']} | " + " | ".join(cells) + " |")
    text = DOC.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{BEGIN}\n{chr(10).join(lines)}\n{END}{tail}")
    print(f"wrote {len(attacks)} attacks x {len(runtimes)} runtimes into {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
