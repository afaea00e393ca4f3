"""Each figure of bench/results/*.json against the last committed results; flags what got >10% worse.

    .venv/bin/python bench/compare.py [--against REV] [--threshold 0.10] [--strict]

A figure's direction comes from its name: rates (``runs_per_s``) are better higher; times
(``_ms``, ``_s``, ``seconds``), ratios, memory (``rss_mib``), engine CPU, failures and leaks are
better lower; anything else (counts, sizes, settings) is shown once and never flagged. The machine
is shared and noisy: a flag says "measure again side by side", not "regressed" by itself. With
``--strict`` the exit status is 1 when something is flagged (for a quiet, dedicated machine).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
#: Parts of a result file that describe the conditions, not a figure.
CONDITIONS = {"machine", "started_at", "load_before", "load_after"}
HIGHER = ("runs_per_s", "warm_share")
LOWER = ("_ms", "_s", "seconds", "ratio", "rss_mib", "cpu_ms_per_run", "failed", "leaked")


def direction(path: str) -> int:
    """+1 if higher is better, -1 if lower is better, 0 if the figure is informational."""
    leaf = path.rsplit(".", 1)[-1]
    if any(h in path for h in HIGHER):
        return 1
    if leaf in ("n", "rounds", "orphans", "flood_mib", "concurrent"):
        return 0
    if leaf.endswith(LOWER) or any(part.startswith("ratios") for part in path.split(".")) or leaf in ("failed", "leaked_containers"):
        return -1
    return 0


def flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Numeric leaves as (dotted path, value); lists of rows are keyed by their first field's value."""
    if isinstance(data, bool):
        return
    if isinstance(data, int | float):
        yield prefix, float(data)
    elif isinstance(data, dict):
        for key, value in data.items():
            if prefix == "" and key in CONDITIONS:
                continue
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list):
        for i, row in enumerate(data):
            label = f"{next(iter(row))}={next(iter(row.values()))}" if isinstance(row, dict) and row else str(i)
            yield from flatten(row, f"{prefix}[{label}]")


def committed(name: str, rev: str) -> dict[str, Any] | None:
    """The results file as committed at ``rev`` (None if it was not committed there)."""
    try:
        text = subprocess.run(["git", "show", f"{rev}:bench/results/{name}"], cwd=RESULTS.parent.parent,
                              capture_output=True, text=True, check=True).stdout
    except subprocess.CalledProcessError:
        return None
    try:
        loaded = json.loads(text)
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else None


def compare(old: dict[str, Any], new: dict[str, Any], threshold: float) -> tuple[list[list[str]], int]:
    """Rows (figure, committed, now, change, flag) and how many figures are worse than ``threshold``."""
    before, after = dict(flatten(old)), dict(flatten(new))
    rows, worse = [], 0
    for path in sorted(before.keys() | after.keys()):
        a, b = before.get(path), after.get(path)
        sense = direction(path)
        change, flag = "", ""
        if a is not None and b is not None and a != 0:
            rel = (b - a) / abs(a)
            change = f"{rel:+.1%}"
            if sense and rel * sense < -threshold:
                flag, worse = "WORSE", worse + 1
            elif sense and rel * sense > threshold:
                flag = "better"
        elif a is None:
            flag = "new"
        elif b is None:
            flag = "gone"
        rows.append([path, "" if a is None else f"{a:g}", "" if b is None else f"{b:g}", change, flag])
    return rows, worse


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="HEAD", metavar="REV", help="git revision of the results to compare with")
    parser.add_argument("--threshold", type=float, default=0.10)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a figure is worse than the threshold")
    args = parser.parse_args()
    files = sorted(RESULTS.glob("*.json"))
    if not files:
        print("no bench/results/*.json: run 'make bench' first", file=sys.stderr)
        return 2
    total = 0
    for path in files:
        new = json.loads(path.read_text())
        old = committed(path.name, args.against)
        print(f"\n== {path.name}  (committed at {args.against}: {'yes' if old else 'no'}; "
              f"now measured {new.get('started_at', '?')}, load {new.get('load_before', {}).get('loadavg_1m', '?')})")
        if old is None:
            print("   nothing committed to compare with; commit these results to make them the reference")
            continue
        rows, worse = compare(old, new, args.threshold)
        total += worse
        width = max(len(r[0]) for r in rows) if rows else 10
        for fig, a, b, change, flag in rows:
            print(f"   {fig:<{width}}  {a:>10}  {b:>10}  {change:>8}  {flag}")
    print(f"\n{total} figure(s) more than {args.threshold:.0%} worse than at {args.against}"
          + (" (shared machine: measure again before believing it)" if total else ""))
    return 1 if (args.strict and total) else 0


if __name__ == "__main__":
    sys.exit(main())
