"""Exporting a run's spans (``trace.jsonl``) to an OTLP/HTTP collector as OTLP JSON.

Our span lines already use OpenTelemetry's names (trace id, span id, parent span id, times in
unix nanoseconds, status code, attributes); this module only reshapes them into
``ExportTraceServiceRequest`` JSON and POSTs it to ``<endpoint>/v1/traces``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from dad_sandbox._version import __version__
from dad_sandbox.errors import RunError
from dad_sandbox.run._jsonl import iter_jsonl
from dad_sandbox.run._layout import TRACE_FILE

_STATUS = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_KIND = {"SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3}


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": value if isinstance(value, str) else json.dumps(value, default=str)}


def _attributes(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": str(k), "value": _any_value(v)} for k, v in attrs.items()]


def to_otlp(run_dir: Path, run_id: str) -> dict[str, Any]:
    """The OTLP JSON request body for every valid span of a run."""
    spans = []
    for _, rec in iter_jsonl(run_dir, TRACE_FILE):
        if not all(isinstance(rec.get(k), str) for k in ("trace_id", "span_id", "name")):
            continue
        status = rec.get("status") or {}
        span: dict[str, Any] = {
            "traceId": rec["trace_id"],
            "spanId": rec["span_id"],
            "name": rec["name"],
            "kind": _KIND.get(rec.get("kind", ""), 1),
            "startTimeUnixNano": str(rec.get("start_time_unix_nano") or 0),
            "endTimeUnixNano": str(rec.get("end_time_unix_nano") or 0),
            "attributes": _attributes(rec.get("attributes") or {}),
            "status": {"code": _STATUS.get(status.get("code", ""), 0), "message": status.get("message") or ""},
        }
        if rec.get("parent_span_id"):
            span["parentSpanId"] = rec["parent_span_id"]
        spans.append(span)
    return {
        "resourceSpans": [{
            "resource": {"attributes": _attributes({"service.name": "dad-sandbox", "dad.run_id": run_id})},
            "scopeSpans": [{"scope": {"name": "dad-sandbox", "version": __version__}, "spans": spans}],
        }]
    }


def export_otlp(run_dir: Path, run_id: str, endpoint: str, *, timeout: float = 10.0) -> int:
    """POST the run's spans to ``<endpoint>/v1/traces``; return how many were sent.

    Raises:
        RunError: the collector could not be reached or answered with an error.
    """
    body = to_otlp(run_dir, run_id)
    count = len(body["resourceSpans"][0]["scopeSpans"][0]["spans"])
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status >= 300:
                raise RunError(f"the OTLP collector at {url} answered {response.status}")
    except urllib.error.URLError as exc:
        raise RunError(f"could not send spans to {url}: {exc}") from exc
    return count
