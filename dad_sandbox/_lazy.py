"""Lazy package exports (PEP 562): a name is imported from its module the first time it is used.

Why: ``import dad_sandbox`` (and so the ``dad-sandbox`` command's start-up) should pay only for
what is used - pydantic, the Docker SDK and GitPython are imported when a feature needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` on first access and caches it."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
