"""Naming a component by ``module:attribute`` so a fresh interpreter in the container can import it.

Why by reference and not by pickling: the container runs different code from the host's memory,
and a reference to an importable module of the project is reproducible (re-runs import it again).
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

from dad_sandbox.dsl import AgentDefinition, FlowDefinition
from dad_sandbox.errors import ComponentReferenceError


def reference_of(component: Any, project_root: Path) -> str:
    """The ``module:attribute`` under which ``component`` is importable from ``project_root``.

    Raises:
        ComponentReferenceError: defined in ``__main__``, not a module attribute, or outside the project.
    """
    module_name = getattr(component, "defined_in", None) or getattr(component, "__module__", None)
    if module_name in (None, "__main__"):
        raise ComponentReferenceError(
            f"component {getattr(component, 'id', component)!r} is defined in __main__, which the container "
            "cannot import: move it into a module of the project (e.g. my_project/agent.py) and import it from there"
        )
    module = sys.modules.get(module_name)
    if module is None:
        raise ComponentReferenceError(f"module {module_name!r} of component {component!r} is not imported")
    attr = next((k for k, v in vars(module).items() if v is component), None)
    if attr is None:
        raise ComponentReferenceError(
            f"component {getattr(component, 'id', component)!r} is not a top-level attribute of module "
            f"{module_name!r}; assign it to a module-level name so the container can import it"
        )
    module_file = getattr(module, "__file__", None)
    if module_file is not None:
        path = Path(module_file).resolve()
        if not path.is_relative_to(project_root.resolve()):
            raise ComponentReferenceError(
                f"module {module_name!r} ({path}) is outside the project root {project_root}; the container sees "
                "only the project root, so put the component inside it or set project_root to a folder that holds it"
            )
    return f"{module_name}:{attr}"


_REFERENCE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


def check_reference(reference: str) -> str:
    """Check the SHAPE of ``module:attribute`` on the host, without importing anything.

    Whether the module imports and what the attribute is can only be learned in the container
    (the host never imports project code); that happens before any node runs.

    Raises:
        ComponentReferenceError: not of the form ``package.module:attribute`` or names ``__main__``.
    """
    if not isinstance(reference, str) or not _REFERENCE_RE.match(reference):
        raise ComponentReferenceError(
            f"component reference {reference!r} must look like 'package.module:attribute' (Python identifiers)"
        )
    if reference.partition(":")[0] == "__main__":
        raise ComponentReferenceError("a component in __main__ cannot be imported by reference; move it into a module")
    return reference


def provisional_root_id(reference: str) -> str:
    """A root component id to set the run up with before the container reports the real one.

    The attribute name is a valid element id by construction (:func:`check_reference`); the host
    replaces it with the id the container found once the run ends.
    """
    return check_reference(reference).rpartition(":")[2]


def import_component(reference: str) -> FlowDefinition | AgentDefinition:
    """Import ``module:attribute`` and check that it is a component.

    Raises:
        ComponentReferenceError: malformed reference, import error, missing attribute or not a component.
    """
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise ComponentReferenceError(f"component reference {reference!r} must look like 'package.module:attribute'")
    if module_name == "__main__":
        raise ComponentReferenceError("a component in __main__ cannot be imported by reference; move it into a module")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ComponentReferenceError(
            f"cannot import module {module_name!r} for component {reference!r}: {exc}; the module must be "
            "importable from the project root"
        ) from exc
    try:
        component = getattr(module, attr)
    except AttributeError as exc:
        raise ComponentReferenceError(f"module {module_name!r} has no attribute {attr!r}") from exc
    if not isinstance(component, FlowDefinition | AgentDefinition):
        raise ComponentReferenceError(
            f"{reference!r} is a {type(component).__name__}, not a FlowDefinition or AgentDefinition"
        )
    return component
