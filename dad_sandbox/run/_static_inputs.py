"""Static inputs: values for nodes given before a run, in code or in ``static_inputs.json``.

Why values are kept as JSON-able dicts until a node asks: the run context does not know a node's
input model when the JSON file is read; the node does. :meth:`StaticInputs.get` validates the raw
value into the model the node declares, so a value read from JSON becomes a real model instance
(upstream DAD compared raw dicts with ``isinstance`` and failed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from dad_sandbox._limits import MAX_STATIC_INPUTS_BYTES
from dad_sandbox.errors import StaticInputsError

M = TypeVar("M", bound=BaseModel)


class StaticInputs:
    """Static input values keyed by node id or full hierarchy path."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, Any]] = {}
        self._from_code: set[str] = set()

    def register(self, key: str, value: BaseModel | dict[str, Any]) -> None:
        """Register a value in code; it wins over the same key read from the file later."""
        if isinstance(value, BaseModel):
            raw = value.model_dump(mode="json")
        elif isinstance(value, dict):
            raw = json.loads(json.dumps(value))
        else:
            raise StaticInputsError(
                f"static input for {key!r} must be a pydantic model or a dict, not {type(value).__name__}"
            )
        self._values[key] = raw
        self._from_code.add(key)

    def load_file(self, path: Path) -> list[str]:
        """Merge values from a JSON object file; return the keys read. A missing file reads as empty.

        Raises:
            StaticInputsError: the file is too large, not JSON, or not an object of objects.
        """
        if not path.exists():
            return []
        if path.is_symlink() or not path.is_file():
            raise StaticInputsError(f"{path} must be a regular file (not a link or a directory)")
        if path.stat().st_size > MAX_STATIC_INPUTS_BYTES:
            raise StaticInputsError(f"{path} is larger than {MAX_STATIC_INPUTS_BYTES} bytes")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StaticInputsError(f"{path} is not valid JSON: {exc}; fix or remove it") from exc
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise StaticInputsError(
                f"{path} must hold one JSON object mapping node ids (or hierarchy paths) to objects, "
                'e.g. {"my_node": {"param1": "v"}}'
            )
        for key, value in data.items():
            if key not in self._from_code:
                self._values[key] = value
        return list(data)

    def to_json_bytes(self) -> bytes:
        return (json.dumps(self._values, indent=2, sort_keys=True) + "\n").encode()

    def keys(self) -> list[str]:
        return sorted(self._values)

    def raw(self, node_id: str, hierarchy_path: str | None = None) -> dict[str, Any] | None:
        """The raw value for a node: its full hierarchy path wins over its bare id."""
        if hierarchy_path is not None and hierarchy_path in self._values:
            return self._values[hierarchy_path]
        return self._values.get(node_id)

    def get(self, node_id: str, model: type[M], hierarchy_path: str | None = None) -> M | None:
        """The value for a node validated into ``model``, or ``None`` when none was given.

        Raises:
            StaticInputsError: the value does not validate; the message names the node and the fields.
        """
        raw = self.raw(node_id, hierarchy_path)
        if raw is None:
            return None
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            where = hierarchy_path or node_id
            raise StaticInputsError(
                f"static input for node {where!r} does not match {model.__name__}: {exc}"
            ) from exc
