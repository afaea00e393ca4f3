"""Checks a run's request against its component before any node runs.

Why here and not on the host: the component is project code, and the host never imports project
code (DESIGN.md, trust boundary rule 1). The in-container entrypoint calls :func:`preflight` right
after importing the component; a mistake in the re-run start path or in a static input (a missing
node, a wrong type) then ends the run as ``failed`` with reason ``rerun_target`` or
``invalid_inputs`` before the first node did any work. In-process runs call the same function.

Every message is one line naming the node, the field and what was expected, because the CLI shows
it as the whole error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from dad_sandbox.dsl import AgentDefinition, FlowDefinition, Node, static_paths
from dad_sandbox.errors import RerunTargetError, StaticInputsError
from dad_sandbox.run import RunContext

#: How many field errors one message lists before "and N more".
MAX_LISTED_ERRORS = 5


@dataclass(frozen=True, slots=True)
class ComponentDescription:
    """What the host may learn about a component: data only, returned through the runner report."""

    component_id: str
    kind: str
    paths: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.component_id, "kind": self.kind, "paths": self.paths}


def describe(component: FlowDefinition | AgentDefinition) -> ComponentDescription:
    """The component's id and every hierarchy path known before running (loop bodies as ``iter_N``)."""
    kind = "agent" if isinstance(component, AgentDefinition) else "flow"
    return ComponentDescription(component.id, kind, list(static_paths(component)))


def preflight(component: FlowDefinition | AgentDefinition, ctx: RunContext) -> ComponentDescription:
    """Validate the re-run start path and every static input (keys, types, required fields).

    Raises:
        RerunTargetError: the start path matches no element of the component.
        StaticInputsError: a key names no node or is ambiguous, a value does not validate against
            the node's input model, or a node that will run needs an input nobody gave.
    """
    paths = static_paths(component)
    order = list(paths)
    start = ctx.start_hierarchy_path if ctx.previous_run_id else None
    if start is not None and start not in paths:
        near = sorted(p for p in paths if p.rsplit(".", 1)[-1] == start.rsplit(".", 1)[-1])
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        example = next(iter(sorted(paths, key=len)[1:]), component.id)
        raise RerunTargetError(
            f"start path {start!r} matches no element of {component.id!r} (paths are dot-separated from the "
            f"root, e.g. {example!r}){hint}"
        )
    nodes = {p: e for p, e in paths.items() if isinstance(e, Node)}
    keyed = _check_keys(component.id, nodes, ctx)
    loaded = _loaded_paths(order, start) if start is not None else set()
    for path, node in nodes.items():
        if node.input_model is None:
            continue
        raw = _value_for(ctx, node, path, keyed)
        if raw is None:
            if path not in loaded and not _maybe_skipped(path):
                _check_defaults(path, node.id, node.input_model)
            continue
        for key, value in raw:
            _check_value(key, path, node.input_model, value)
    return describe(component)


def _check_keys(root_id: str, nodes: dict[str, Node], ctx: RunContext) -> dict[str, list[str]]:
    """Map each static input key to the static node paths it addresses; refuse unknown or ambiguous keys."""
    out: dict[str, list[str]] = {}
    for key in ctx.static_inputs.keys():
        if "." in key:
            matches = [p for p in nodes if p == key or _loop_match(p, key)]
            if not matches:
                raise StaticInputsError(f"static input key {key!r} names no node of {root_id!r}")
            out[key] = matches
            continue
        candidates = sorted(p for p, n in nodes.items() if n.id == key)
        if not candidates:
            raise StaticInputsError(
                f"static input key {key!r} names no node of {root_id!r}; nodes: "
                f"{', '.join(sorted({n.id for n in nodes.values()}))}"
            )
        if len(candidates) > 1:
            raise StaticInputsError(
                f"static input key {key!r} is ambiguous: nodes {', '.join(candidates)} all have that id; "
                "key it by full hierarchy path instead"
            )
        out[key] = candidates
    return out


def _value_for(ctx: RunContext, node: Node, path: str, keyed: dict[str, list[str]]) -> list[tuple[str, Any]] | None:
    """Every (key, raw value) the node at ``path`` will see: the one that wins (full path over bare
    id, as :meth:`StaticInputs.raw` decides) and each concrete loop-iteration key; None when nothing."""
    found: list[tuple[str, Any]] = []
    if path in keyed:
        found.append((path, ctx.static_inputs.raw(path)))
    elif node.id in keyed and path in keyed[node.id]:
        found.append((node.id, ctx.static_inputs.raw(node.id)))
    found.extend((key, ctx.static_inputs.raw(key)) for key, targets in keyed.items()
                 if "." in key and key != path and path in targets)
    return found or None


def _check_value(key: str, path: str, model: type[BaseModel], value: Any) -> None:
    try:
        model.model_validate(value)
    except ValidationError as exc:
        raise StaticInputsError(_one_line(key, path, model, exc)) from exc


def _check_defaults(path: str, node_id: str, model: type[BaseModel]) -> None:
    try:
        model()
    except ValidationError as exc:
        missing = [".".join(str(p) for p in e["loc"]) for e in exc.errors() if e["type"] == "missing"]
        fields = ", ".join(f"{m!r} ({_expected(model, m)})" for m in missing) or "its required fields"
        raise StaticInputsError(
            f"node {path!r} needs a static input of type {model.__name__} with {fields}; give it with "
            f"--inputs (e.g. {{\"{node_id}\": {{...}}}}) or run_context.register_node_static_input({node_id!r}, ...)"
        ) from exc


def _one_line(key: str, path: str, model: type[BaseModel], exc: ValidationError) -> str:
    errors = exc.errors()
    parts = []
    for err in errors[:MAX_LISTED_ERRORS]:
        loc = ".".join(str(p) for p in err["loc"]) or "(the whole value)"
        got = repr(err.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        if err["type"] == "missing":
            parts.append(f"field {loc!r} is missing (expected {_expected(model, loc)})")
        elif err["type"] == "extra_forbidden":
            parts.append(f"field {loc!r} is not a field of {model.__name__}")
        else:
            parts.append(f"field {loc!r} expected {_expected(model, loc)}, got {got} ({err['msg']})")
    more = f"; and {len(errors) - MAX_LISTED_ERRORS} more" if len(errors) > MAX_LISTED_ERRORS else ""
    where = repr(path) if key == path else f"{path!r} (key {key!r})"
    return f"static input for node {where} does not match {model.__name__}: {'; '.join(parts)}{more}"


def _expected(model: type[BaseModel], loc: str) -> str:
    """The declared type of a top-level field, as written in the model (e.g. ``bool``, ``list[int]``)."""
    info = model.model_fields.get(loc.split(".", 1)[0])
    if info is None or info.annotation is None:
        return "a valid value"
    ann = info.annotation
    return ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "")


def _loaded_paths(order: list[str], start: str) -> set[str]:
    """Paths a re-run loads from the previous run: before ``start`` in walk order, not its ancestors."""
    out: set[str] = set()
    for path in order:
        if path == start:
            break
        if not (start == path or start.startswith(path + ".")):
            out.add(path)
    return {p for p in order if any(p == q or p.startswith(q + ".") for q in out)}


def _maybe_skipped(path: str) -> bool:
    """Inside a branch or a loop body: the node may never run, so a missing input is not yet an error."""
    return any(seg in ("is_true", "is_false", "iter_N") for seg in path.split("."))


def _loop_match(static_path: str, key: str) -> bool:
    """``a.loop.iter_N.n`` (static) matches a concrete key ``a.loop.iter_3.n``."""
    s_parts, k_parts = static_path.split("."), key.split(".")
    return len(s_parts) == len(k_parts) and all(
        s == k or (s == "iter_N" and k.startswith("iter_") and k[5:].isdigit()) for s, k in zip(s_parts, k_parts, strict=True)
    )
