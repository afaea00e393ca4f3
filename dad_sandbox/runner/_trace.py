"""Spans written as JSON lines to ``.trace/trace.jsonl``, close to OpenTelemetry's span JSON.

Why not the OpenTelemetry SDK: inside the container only a file is reachable, and a span per line
with OTel field names (trace id, span id, parent span id, times in unix nanoseconds, status code,
attributes) is enough for an exporter to turn into OTLP later.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class Span:
    """One unit of work; its line is written when it ends."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    attributes: dict[str, Any]
    start_time_unix_nano: int = field(default_factory=time.time_ns)
    end_time_unix_nano: int | None = None
    status_code: str = "UNSET"
    status_message: str | None = None

    def set_error(self, message: str) -> None:
        self.status_code = "ERROR"
        self.status_message = message

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "kind": "SPAN_KIND_INTERNAL",
            "start_time_unix_nano": self.start_time_unix_nano,
            "end_time_unix_nano": self.end_time_unix_nano,
            "status": {"code": f"STATUS_CODE_{self.status_code}", "message": self.status_message},
            "attributes": self.attributes,
        }


class TraceWriter:
    """Appends finished spans to a JSONL file; one trace id per run."""

    def __init__(self, path: Path, *, run_id: str, trace_id: str | None = None) -> None:
        self._path = path
        self.run_id = run_id
        self.trace_id = trace_id or secrets.token_hex(16)
        self._stack: list[Span] = []

    @contextlib.contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Span]:
        """Open a child span of the current one; it is written (with error status) even on exception."""
        parent = self._stack[-1].span_id if self._stack else None
        span = Span(name, self.trace_id, secrets.token_hex(8), parent, {"dad.run_id": self.run_id, **attributes})
        self._stack.append(span)
        try:
            yield span
        except BaseException as exc:
            if span.status_code != "ERROR":
                span.set_error(f"{type(exc).__name__}: {exc}")
            raise
        else:
            if span.status_code == "UNSET":
                span.status_code = "OK"
        finally:
            self._stack.pop()
            span.end_time_unix_nano = time.time_ns()
            span.attributes["dad.duration_seconds"] = round(
                (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9, 6
            )
            self._write(span)

    def _write(self, span: Span) -> None:
        line = json.dumps(span.to_json(), default=str) + "\n"
        with open(self._path, "a", encoding="utf-8") as fh:
            fh.write(line)
