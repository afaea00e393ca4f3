"""Parsing what a run wrote: bounded, total, typed. Every host reader of run data goes through here.

The run is hostile (DESIGN.md, trust boundary rule 2). Its JSON can be a recursion bomb
(``[`` × 100000), an object where a list was expected, a float where a string was expected, or a
line of a gigabyte. The helpers here never raise on such input: they return ``None`` (or a
:class:`Rejected` reason) and the caller counts and quarantines it. Limits are enforced while
reading, never after loading the whole thing.

Why a depth check of our own: ``json.loads`` stops deep nesting with ``RecursionError`` (not a
``ValueError``) and code that later walks a parsed value recursively would hit the same wall, so
a value deeper than :data:`MAX_DEPTH` is refused outright.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from dad_sandbox._limits import MAX_STRING_CHARS

#: Nesting allowed in any JSON value a run hands to the host.
MAX_DEPTH = 32
#: Keys of one object / items of one list we accept (a flat bomb of a million keys is refused).
MAX_CONTAINER_ITEMS = 10_000
#: Characters of all non-scalar span attribute values of one span together.
MAX_SPAN_ATTRIBUTE_CHARS = 8 << 10


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a piece of run data was refused (for quarantine records and counters)."""

    reason: str


def _shape_ok(value: Any) -> str | None:
    """None if ``value`` (already parsed) is within depth and size limits, else the reason."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            if len(item) > MAX_CONTAINER_ITEMS:
                return f"an object or list of more than {MAX_CONTAINER_ITEMS} items"
            seen += len(item)
            if seen > 10 * MAX_CONTAINER_ITEMS:
                return f"more than {10 * MAX_CONTAINER_ITEMS} values"
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, float) and not math.isfinite(item):
            return "a number that is not finite"
    return None


def _depth_prescan(data: bytes) -> bool:
    """Cheap upper bound: False when brackets alone already nest deeper than allowed.

    Counts ``[``/``{`` minus ``]``/``}`` ignoring strings only roughly (a bracket inside a string
    counts too): it may refuse early only when the text holds over MAX_DEPTH * 4 unmatched opening
    brackets in a row, which no honest record of ours does, and never lets a bomb reach the parser.
    """
    depth = 0
    limit = MAX_DEPTH * 4
    for byte in data:
        if byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def text(value: str) -> str:
    """A string safe to encode as UTF-8: lone surrogates (``"\\ud800"`` in JSON) become U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in value)
    return value


def _without_surrogates(value: Any) -> Any:
    """``value`` rebuilt with every string (keys too) passed through :func:`text` (iterative)."""
    if isinstance(value, str):
        return text(value)
    if not isinstance(value, dict | list):
        return value
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
    while stack:
        item, parent, key = stack.pop()
        if isinstance(item, dict):
            new: Any = {}
            for k, v in item.items():
                stack.append((v, new, text(k)))
        elif isinstance(item, list):
            new = [None] * len(item)
            for i, v in enumerate(item):
                stack.append((v, new, i))
        else:
            new = text(item) if isinstance(item, str) else item
        parent[key] = new
    return root[0]


def loads(data: bytes | str) -> Any | Rejected:
    """Parse one JSON document from the run; a :class:`Rejected` instead of any exception.

    Strings come back encodable as UTF-8 (lone surrogates replaced), so whatever the host writes
    from them later cannot fail to serialize.
    """
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH * 4 and not _depth_prescan(raw):
        return Rejected(f"nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(raw)
    except RecursionError:
        return Rejected(f"nested deeper than {MAX_DEPTH} levels")
    except (UnicodeDecodeError, ValueError) as exc:
        return Rejected(f"not valid JSON: {type(exc).__name__}")
    problem = _shape_ok(value)
    if problem:
        return Rejected(problem)
    return _without_surrogates(value) if _SURROGATE_ESCAPE.search(raw) else value


def loads_object(data: bytes | str) -> dict[str, Any] | Rejected:
    """Like :func:`loads`, but only a JSON object is accepted."""
    value = loads(data)
    if isinstance(value, Rejected):
        return value
    if not isinstance(value, dict):
        return Rejected(f"a JSON {type(value).__name__}, not an object")
    return value


def clip(value: Any, limit: int = MAX_STRING_CHARS) -> str:
    """Any value as a string of at most ``limit`` characters (what a record field may hold)."""
    s = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)[: limit + 1]
    s = text(s)
    return s if len(s) <= limit else s[:limit] + "…"


def as_int(value: Any) -> int | None:
    """An int from the run (bools and out-of-range numbers are not ints), or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -(2**63) <= value < 2**64 else None


def as_str(value: Any, limit: int = 256) -> str | None:
    """A short string from the run (UTF-8-encodable), or None."""
    return text(value) if isinstance(value, str) and len(value) <= limit else None


_SPAN_STATUS = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")
_ATTR_SCALARS = (str, int, float, bool)


def span(obj: dict[str, Any]) -> dict[str, Any] | Rejected:
    """A span record from ``trace.jsonl`` with every field the host reads of the right type.

    Returns the normalized span (unknown fields dropped, attribute values scalar or clipped
    strings), or why it was refused. Readers (``runs show/trace``, OTLP export) can then index it
    without checks.
    """
    trace_id, span_id, name = as_str(obj.get("trace_id"), 64), as_str(obj.get("span_id"), 64), as_str(obj.get("name"))
    if not (trace_id and span_id and name):
        return Rejected("span without string trace_id, span_id and name")
    parent = obj.get("parent_span_id")
    if parent is not None and as_str(parent, 64) is None:
        return Rejected("span parent_span_id is not a short string")
    start, end = as_int(obj.get("start_time_unix_nano")), obj.get("end_time_unix_nano")
    if start is None or start < 0 or (end is not None and (as_int(end) is None or end < 0)):
        return Rejected("span times are not non-negative integers")
    raw_status, raw_attrs = obj.get("status"), obj.get("attributes")
    status: dict[str, Any] = raw_status if isinstance(raw_status, dict) else {}
    code = status.get("code") if status.get("code") in _SPAN_STATUS else "STATUS_CODE_UNSET"
    message = status.get("message")
    attrs_in: dict[Any, Any] = raw_attrs if isinstance(raw_attrs, dict) else {}
    attrs: dict[str, Any] = {}
    budget = MAX_SPAN_ATTRIBUTE_CHARS
    for key, value in list(attrs_in.items())[:200]:
        if not isinstance(key, str) or len(key) > 200 or budget <= 0:
            continue
        if isinstance(value, bool) or (isinstance(value, float) and math.isfinite(value)) or isinstance(value, int) and as_int(value) is not None:
            attrs[text(key)] = value
        elif isinstance(value, float):
            continue  # not finite
        else:
            attrs[text(key)] = clip(value, min(1024, budget))
            budget -= len(attrs[text(key)])
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "kind": obj.get("kind") if isinstance(obj.get("kind"), str) and len(obj["kind"]) < 40 else "SPAN_KIND_INTERNAL",
        "start_time_unix_nano": start,
        "end_time_unix_nano": end,
        "status": {"code": code, "message": clip(message, 4096) if message is not None else None},
        "attributes": attrs,
    }
