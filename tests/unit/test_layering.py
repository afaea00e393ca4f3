"""The layering of DESIGN.md, checked on every module: the run system never reaches the engine.

Each check runs in a fresh interpreter where the forbidden packages are blocked
(``sys.modules[name] = None`` makes any ``import name`` raise), and it imports every submodule it
is about (``pkgutil.walk_packages``), not just the package: the packages export their names lazily,
so importing ``dad_sandbox.run`` alone would never load ``run/_runs.py`` and could not notice an
``import docker`` there.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: Packages whose every module must import with the Docker SDK blocked (DESIGN.md, "Layers").
PURE_PACKAGES = ("dad_sandbox.run", "dad_sandbox.runner", "dad_sandbox.dsl")

#: What the in-container entrypoints may not need: the lean runner image ships none of these.
HOST_ONLY = ("docker", "git", "gitdb", "click", "tenacity", "requests")

#: The modules that run inside the container (the runner image's entry points).
IN_CONTAINER = ("dad_sandbox.sandbox._entrypoint", "dad_sandbox.sandbox._egress_forwarder")

#: run/ modules the host alone uses (never imported in the container), allowed their host-only dependencies.
HOST_SIDE_RUN_MODULES = ("dad_sandbox.run._outcome",)

_WALK = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    blocked, packages, skip = sys.argv[1].split(","), sys.argv[2].split(","), set(sys.argv[3].split(",")) - {""}
    for name in blocked:
        sys.modules[name] = None
    failures = []
    for package in packages:
        root = importlib.import_module(package)
        names = [package]
        if hasattr(root, "__path__"):
            names += [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
        for name in names:
            if name in skip:
                continue
            try:
                importlib.import_module(name)
            except ImportError as exc:
                failures.append(f"{name}: {exc}")
    loaded = sorted(m for m in blocked if sys.modules.get(m) is not None)
    print("\\n".join(failures + [f"loaded {m}" for m in loaded]))
    sys.exit(1 if failures or loaded else 0)
    """
)


def _import_all(packages: tuple[str, ...], blocked: tuple[str, ...], skip: tuple[str, ...] = ()) -> None:
    """Import every module of ``packages`` in a fresh interpreter with ``blocked`` unimportable."""
    proc = subprocess.run(
        [sys.executable, "-c", _WALK, ",".join(blocked), ",".join(packages), ",".join(skip)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"layering broken:\n{proc.stdout}{proc.stderr}"


def test_walk_finds_the_private_modules() -> None:
    """The walk sees the private modules the lazy exports hide (else the checks below would prove nothing)."""
    import importlib
    import pkgutil

    run = importlib.import_module("dad_sandbox.run")
    names = {m.name for m in pkgutil.walk_packages(run.__path__, "dad_sandbox.run.")}
    assert {"dad_sandbox.run._runs", "dad_sandbox.run._jsonl", "dad_sandbox.run._context"} <= names


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_layers_never_import_docker(package: str) -> None:
    """Every module of run/, runner/ and dsl/ imports with the Docker SDK blocked."""
    _import_all((package,), ("docker",))


def test_in_container_modules_need_no_host_dependency() -> None:
    """The in-container entrypoints and everything of run/runner/dsl they may load import without the
    Docker SDK, GitPython, click or tenacity - what the lean runner image leaves out."""
    _import_all(IN_CONTAINER + PURE_PACKAGES, HOST_ONLY, skip=HOST_SIDE_RUN_MODULES)


def test_the_check_fails_on_a_forbidden_import(tmp_path: pytest.TempPathFactory) -> None:
    """A module that imports a blocked package makes the walk fail (the check can fail)."""
    pkg = tmp_path / "layer_probe"  # type: ignore[operator]
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_hidden.py").write_text("import docker\n")
    proc = subprocess.run(
        [sys.executable, "-c", _WALK, "docker", "layer_probe", ""],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 1 and "layer_probe._hidden" in proc.stdout


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_no_deferred_docker_import(package: str) -> None:
    """No module of run/, runner/ or dsl/ imports the Docker SDK, not even inside a function (which
    importing the module would not reveal)."""
    import ast
    import importlib
    from pathlib import Path

    root = Path(importlib.import_module(package).__path__[0])
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.name}:{node.lineno}" for n in names if n.split(".")[0] == "docker"]
    assert not offenders, f"{package} imports docker at {offenders}"


def test_runs_and_jsonl_are_read_through_the_run_package() -> None:
    """Outside run/, runs are found and JSONL is read through ``dad_sandbox.run``'s public names,
    never its private ``_runs``/``_jsonl`` modules (run/ may move code between them freely)."""
    import ast
    from pathlib import Path

    import dad_sandbox

    root = Path(dad_sandbox.__path__[0])
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if root / "run" in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module in ("dad_sandbox.run._runs", "dad_sandbox.run._jsonl"):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not offenders, f"import dad_sandbox.run's public names instead: {offenders}"
