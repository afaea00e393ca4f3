"""Node metrics (duration, success, failure) from the runner.

In-process the runner appends to ``.trace/metrics.jsonl`` itself. Inside a container that file
belongs to the host, so the runner prints each metric as one ``{"dad_metric": …}`` line on stderr
and the host supervisor validates it and writes it into ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

METRIC_KEY = "dad_metric"


class MetricsEmitter:
    """Writes metric records to a file (in-process) or to a stream for the host (in a container)."""

    def __init__(self, *, run_id: str, path: Path | None = None, stream: IO[str] | None = None, prefix: str = "") -> None:
        self.run_id = run_id
        self._path = path
        self._stream = stream
        self._prefix = prefix

    @classmethod
    def for_container(cls, run_id: str, prefix: str = "") -> MetricsEmitter:
        """Metrics as lines on stderr, each starting with the run's channel ``prefix``."""
        return cls(run_id=run_id, stream=sys.stderr, prefix=prefix)

    def emit(self, name: str, value: float, *, unit: str | None = None, **attributes: Any) -> None:
        record = {"name": name, "value": value, "unit": unit, "attributes": attributes}
        if self._stream is not None:
            self._stream.write(self._prefix + json.dumps({METRIC_KEY: record}, default=str) + "\n")
            self._stream.flush()
        elif self._path is not None:
            line = {"ts": datetime.now(UTC).isoformat(), "run_id": self.run_id, "source": "runner", **record}
            with open(self._path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(line, default=str) + "\n")
