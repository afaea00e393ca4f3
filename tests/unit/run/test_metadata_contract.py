"""dad_metadata.json is a closed, versioned contract: every field declared, no extras, schema published."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from dad_sandbox.errors import RunError
from dad_sandbox.run import RunContext, read_metadata
from dad_sandbox.run._metadata import SCHEMA_VERSION, RunMetadata, metadata_schema

ROOT = Path(__file__).resolve().parents[3]


def test_every_field_the_code_records_is_declared() -> None:
    """Each keyword passed to RunContext.record(...) anywhere in the package is a RunMetadata field."""
    used: dict[str, str] = {}
    for path in (ROOT / "dad_sandbox").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "record" or isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "to_thread" and node.args and \
                    getattr(node.args[0], "attr", None) == "record":
                used.update({kw.arg: str(path.relative_to(ROOT)) for kw in node.keywords if kw.arg})
    undeclared = {k: where for k, where in used.items() if k not in RunMetadata.model_fields}
    assert not undeclared, f"record() fields missing from RunMetadata: {undeclared}"
    assert len(used) > 20, "the scan found too few record() calls to mean anything"


def test_unknown_fields_are_refused(tmp_path: Path) -> None:
    """record() refuses a field the contract does not declare, and the model forbids extras."""
    (tmp_path / "p").mkdir()
    ctx = RunContext("agent", tmp_path / "p", run_root=tmp_path / "runs")
    ctx.setup_run()
    with pytest.raises(RunError, match="not run metadata fields: surprise"):
        ctx.record(surprise=1)
    with pytest.raises(ValueError):
        RunMetadata.model_validate({**json.loads(ctx.metadata.to_json_bytes()), "surprise": 1})


def test_version_one_metadata_is_still_read(tmp_path: Path) -> None:
    """Metadata written before the contract closed (schema 1, extra fields) still reads, extras dropped."""
    (tmp_path / "p").mkdir()
    ctx = RunContext("agent", tmp_path / "p", run_root=tmp_path / "runs")
    ctx.setup_run()
    old = {**json.loads(ctx.metadata.to_json_bytes()), "schema_version": 1, "an_old_field": {"x": 1}}
    (ctx.trace_dir / "dad_metadata.json").write_text(json.dumps(old))
    assert read_metadata(ctx.run_dir).run_id == ctx.run_id
    assert ctx.metadata.schema_version == SCHEMA_VERSION


def test_published_schema_is_current() -> None:
    """docs/dad_metadata.schema.json is the model's schema (regenerate it when a field changes)."""
    published = json.loads((ROOT / "docs" / "dad_metadata.schema.json").read_text())
    assert published == json.loads(json.dumps(metadata_schema())), (
        "regenerate: python -c \"import json; from dad_sandbox.run._metadata import metadata_schema; "
        "print(json.dumps(metadata_schema(), indent=2, sort_keys=True))\" > docs/dad_metadata.schema.json")
