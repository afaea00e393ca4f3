"""The limits module: one owner for every bound, each with its reason, consistent with each other."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from dad_sandbox import _limits


def test_every_limit_says_why() -> None:
    """Each constant in _limits has a ``#:`` comment above it that says more than where it is used."""
    source = Path(_limits.__file__).read_text(encoding="utf-8").splitlines()
    for node in ast.parse("\n".join(source)).body:
        if isinstance(node, ast.Assign):
            above = source[node.lineno - 2]
            assert above.startswith("#:") and not above.startswith("#: ("), f"{ast.unparse(node)} has no reason"


def test_line_caps_sit_below_their_file_caps() -> None:
    """A line cap larger than the cap of its file could never apply."""
    assert _limits.TRACE_MAX_LINE_BYTES < _limits.MAX_TRACE_BYTES
    assert _limits.JSONL_MAX_LINE_BYTES < _limits.MAX_JSONL_BYTES
    assert _limits.OUTPUT_TAIL_BYTES <= _limits.EVENTS_MAX_BYTES


def test_modules_use_the_owned_values() -> None:
    """The modules that apply a bound hold the very value of _limits (imported, not copied)."""
    pairs = {
        "dad_sandbox.run._collect": {"MAX_TRACE_BYTES": "MAX_TRACE_BYTES", "MAX_LINE_BYTES": "TRACE_MAX_LINE_BYTES"},
        "dad_sandbox.run._jsonl": {"MAX_LINE_BYTES": "JSONL_MAX_LINE_BYTES"},
        "dad_sandbox.sandbox._container_run": {"FILES_BUDGET_SECONDS": "FILES_BUDGET_SECONDS"},
        "dad_sandbox.sandbox.engine._docker": {"DEFAULT_CALL_TIMEOUT": "ENGINE_CALL_TIMEOUT"},
    }
    for module, names in pairs.items():
        mod = importlib.import_module(module)
        for local, owned in names.items():
            assert getattr(mod, local) == getattr(_limits, owned), (module, local)
