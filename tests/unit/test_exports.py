"""Every package's ``__all__`` is sorted, complete and importable (as httpx's test_exported_members).

Users import from the packages, never from the private modules; a name missing from ``__all__`` or
one listed but broken is caught here, for every subpackage found by walking the tree.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import dad_sandbox

#: Public modules (no leading underscore) that are not packages but promise a surface.
PUBLIC_MODULES = ("dad_sandbox.inspect_provider", "dad_sandbox.testing")


def _packages() -> list[str]:
    found = ["dad_sandbox"]
    found += [m.name for m in pkgutil.walk_packages(dad_sandbox.__path__, "dad_sandbox.") if m.ispkg]
    return found


PACKAGES = _packages()


def test_every_subpackage_is_walked() -> None:
    """The walk reaches the nested packages (else the checks below would cover less than they say)."""
    assert {"dad_sandbox.run", "dad_sandbox.runner", "dad_sandbox.dsl", "dad_sandbox.sandbox",
            "dad_sandbox.sandbox.engine"} <= set(PACKAGES)


@pytest.mark.parametrize("name", PACKAGES + list(PUBLIC_MODULES))
def test_all_is_sorted_and_every_name_exists(name: str) -> None:
    """``__all__`` exists, is sorted without duplicates, and each name resolves (lazy ones included)."""
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert list(exported) == sorted(set(exported)), f"{name}.__all__ is not sorted or has duplicates"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    """``__all__`` is the package's whole public surface: for lazy exports exactly the ``_EXPORTS`` table
    (one list cannot drift from the other), for eager ones every public name it imports."""
    module = importlib.import_module(name)
    lazy = getattr(module, "_EXPORTS", None)
    if lazy is not None:
        public = set(lazy)
    else:
        public = {n for n, v in vars(module).items()
                  if not n.startswith("_") and not isinstance(v, ModuleType) and n != "annotations"}
    assert public == set(module.__all__) - {"__version__"}, f"{name}: __all__ and the public names differ"


def test_seed_api_is_exported() -> None:
    """The DAD seed names are importable from the top package."""
    for name in ("RunContext", "RunEnvParams", "IsolatedExecution", "AgentRunner", "FlowRunner"):
        assert name in dad_sandbox.__all__


def test_make_help_lists_every_target() -> None:
    """Every .PHONY target of the Makefile has its line in ``make help``."""
    import re
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text(encoding="utf-8")
    joined = makefile.replace("\\\n", " ")  # continuation lines
    targets = {t for line in re.findall(r"^\.PHONY:(.*)$", joined, re.M) for t in line.split()}
    helped = set(re.findall(r'^\t@echo "make ([a-z-]+)', makefile, re.M))
    assert targets - helped == set(), f"make help lacks {sorted(targets - helped)}"
