"""Container stdout/stderr into ``.trace/logs.jsonl``: streamed, capped, never buffered whole.

The pump thread hands raw chunks to :class:`OutputSink`, which splits them into lines, writes one
JSON record per line straight to the file (opened without following links), and keeps only a small
tail of stderr in memory for error messages. Past the policy's byte cap (counted in bytes written
to disk), output is counted and dropped, and a final record says how much. Invalid UTF-8 is
replaced, never fatal, and the line is kept.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dad_sandbox._limits import OUTPUT_ATTACH_TIMEOUT as ATTACH_TIMEOUT
from dad_sandbox._limits import OUTPUT_MAX_LINE_BYTES as MAX_LINE_BYTES
from dad_sandbox._limits import OUTPUT_TAIL_BYTES as TAIL_BYTES
from dad_sandbox.run import _hostile
from dad_sandbox.run._metadata import OutputInfo
from dad_sandbox.runner._metrics import METRIC_KEY

#: Receives each structured runner record (``{"event": "node started", "node": …}``) as it arrives.
Observer = Callable[[dict[str, Any]], None]
#: Receives (stream, text) of each plain output line the sink kept (live events); must not block.
LineHook = Callable[[str, str], None]


def _valid_metric(obj: Any) -> dict[str, Any] | None:
    """A metric from the runner, if it has the expected shape (the container is untrusted)."""
    if not isinstance(obj, dict):
        return None
    name, value, attrs = obj.get("name"), obj.get("value"), obj.get("attributes") or {}
    if not isinstance(name, str) or not 0 < len(name) <= 200 or isinstance(value, bool):
        return None
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return None
    if not isinstance(value, int | float) or not math.isfinite(value) or not isinstance(attrs, dict):
        return None
    unit = obj.get("unit")
    return {"name": name, "value": value, "unit": unit if isinstance(unit, str) else None,
            "attributes": {str(k)[:200]: v for k, v in list(attrs.items())[:50] if isinstance(v, str | int | float | bool)}}




async def attach_output(engine: Any, container_id: str, sink: OutputSink, *, pump_holder: Callable[[Any], None]) -> Any:
    """Start streaming a container's output into ``sink`` and return once the stream is attached.

    The pump task is handed to ``pump_holder`` as soon as it exists (so the caller can drain or
    cancel it even if attaching fails). Starting the container only after this returns means no
    output is lost, although the engine keeps no copy of it.

    Raises:
        EngineError: the stream failed, or was not attached within :data:`ATTACH_TIMEOUT`.
    """
    from dad_sandbox.errors import EngineError

    loop = asyncio.get_running_loop()
    attached = asyncio.Event()

    def on_attached() -> None:  # called from the pump's worker thread
        loop.call_soon_threadsafe(attached.set)

    pump = asyncio.create_task(engine.stream_output(container_id, sink, on_attached=on_attached))
    pump_holder(pump)
    waiter = asyncio.create_task(attached.wait())
    done, _ = await asyncio.wait({pump, waiter}, timeout=ATTACH_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if pump in done and pump.exception() is not None:
        raise pump.exception()  # type: ignore[misc]
    if not done:
        raise EngineError(f"attaching to the container's output took longer than {ATTACH_TIMEOUT:g}s")
    return pump


class OutputSink:
    """Turns output chunks into JSONL records on an open file descriptor, under a byte cap.

    Why the cap counts bytes written, not bytes received: a flood of empty lines is small on the
    wire but each becomes a JSON record on disk; the host's disk is what the cap protects.

    Runner records (node progress, metrics) are parsed only from lines that carry this run's
    channel prefix (``\x1edad:<token> ``), which the host hands to the in-container runner in the
    run request. A plain command run has no channel: its output is data, never parsed. The sink
    is called from the engine's pump thread and never raises: a line it cannot handle is counted
    as dropped.
    """

    def __init__(
        self, fd: int, *, limit: int, run_id: str, metrics_fd: int | None = None, observer: Observer | None = None,
        channel: str | None = None, on_line: LineHook | None = None,
    ) -> None:
        self._fd = fd
        self.on_line = on_line
        self._metrics_fd = metrics_fd
        self._observer = observer
        self._limit = limit
        self._run_id = run_id
        self._prefix = channel_prefix(channel) if channel else None
        self._partial: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self._written = 0
        self.internal_errors = 0
        self.info = OutputInfo()

    def __call__(self, stream: str, chunk: bytes) -> None:
        try:
            self._take(stream, chunk)
        except Exception:
            self.internal_errors += 1

    def _take(self, stream: str, chunk: bytes) -> None:
        self.info.bytes_total += len(chunk)
        if stream == "stderr":
            self._remember(chunk)
        if self.info.truncated:  # past the cap nothing is written: count, never split into lines
            self._partial.get(stream, bytearray()).clear()
            return
        buf = self._partial.setdefault(stream, bytearray())
        buf += chunk
        while True:
            cut = buf.find(b"\n", 0, MAX_LINE_BYTES + 1)
            if cut >= 0:
                line, raw, partial = bytes(buf[:cut]), cut + 1, False
            elif len(buf) > MAX_LINE_BYTES:
                line, raw, partial = bytes(buf[:MAX_LINE_BYTES]), MAX_LINE_BYTES, True
            else:
                break
            del buf[:raw]
            try:
                self._emit(stream, line, raw=raw, partial=partial)
            except Exception:
                self.internal_errors += 1
                self.info.bytes_dropped += raw

    def retarget(self, run_id: str, observer: Observer | None, channel: str | None = None) -> None:
        """A warm-pool sink made before its run existed now serves that run."""
        self._run_id = run_id
        self._observer = observer
        self._prefix = channel_prefix(channel) if channel else None

    def _remember(self, chunk: bytes) -> None:
        self._tail.append(chunk[-TAIL_BYTES:])
        self._tail_size += len(self._tail[-1])
        while self._tail_size > TAIL_BYTES and len(self._tail) > 1:
            self._tail_size -= len(self._tail.popleft())

    def _emit(self, stream: str, line: bytes, *, raw: int, partial: bool) -> None:
        if self.info.truncated:
            self.info.bytes_dropped += raw
            return
        now = datetime.now(UTC).isoformat()
        record: dict[str, object] | None = None
        if self._prefix is not None and stream == "stderr" and not partial and line.startswith(self._prefix):
            record = self._structured(line[len(self._prefix):], now)
        if record is None:
            text = line.decode("utf-8", errors="replace")
            record = {"ts": now, "run_id": self._run_id, "source": "container", "stream": stream, "message": text}
            if partial:
                record["partial"] = True
            if "\ufffd" in text and b"\xef\xbf\xbd" not in line:
                record["invalid_utf8"] = True
        if record and not self._write(record):
            self.info.truncated = True
            self.info.bytes_dropped += raw
            return
        self.info.bytes_kept += raw
        self.info.lines_kept += 1
        if self.on_line is not None and record.get("source") == "container":
            try:
                self.on_line(stream, str(record["message"]))
            except Exception:  # a consumer's fault never reaches the sink
                self.on_line = None

    def _structured(self, payload: bytes, now: str) -> dict[str, object] | None:
        """A runner log record or metric (``{}`` when routed to metrics), or None for plain output."""
        obj = _hostile.loads_object(payload)
        if isinstance(obj, _hostile.Rejected):
            return None
        if METRIC_KEY in obj and self._metrics_fd is not None:
            metric = _valid_metric(obj[METRIC_KEY])
            if metric is None:
                return None
            data = (json.dumps({"ts": now, "run_id": self._run_id, "source": "runner", **metric}) + "\n").encode()
            if self._written + len(data) > self._limit:
                return None
            self._written += len(data)
            os.write(self._metrics_fd, data)
            return {}
        event = obj.get("event")
        if not isinstance(event, str):
            return None
        fields = {str(k)[:200]: v for k, v in list(obj.items())[:100] if k not in ("event", "level", "timestamp", "run_id")}
        record: dict[str, object] = {"ts": now, "run_id": self._run_id, "source": "runner", "stream": "stderr",
                                     "level": _hostile.clip(obj.get("level", "info"), 20), "event": event[:1000],
                                     "fields": fields}
        if self._observer is not None:
            try:
                self._observer(record)
            except Exception:
                self._observer = None
        return record

    def _write(self, record: dict[str, object], *, force: bool = False) -> bool:
        """Append one record unless it would take the file past the cap; False if refused."""
        data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8", "replace")
        if not force and self._written + len(data) > self._limit:
            return False
        self._written += len(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        return True

    def finish(self) -> OutputInfo:
        """Flush unterminated lines and record the truncation; return the accounting."""
        for stream, buf in self._partial.items():
            if buf:
                try:
                    self._emit(stream, bytes(buf), raw=len(buf), partial=True)
                except Exception:
                    self.internal_errors += 1
                buf.clear()
        self.info.bytes_dropped = max(0, self.info.bytes_total - self.info.bytes_kept)
        self.info.bytes_written = self._written
        if self.info.truncated:
            self._write(
                {
                    "ts": datetime.now(UTC).isoformat(),
                    "run_id": self._run_id,
                    "source": "dad-sandbox",
                    "stream": "supervisor",
                    "message": f"output truncated: {self.info.bytes_dropped} bytes dropped over the "
                    f"{self._limit}-byte limit of the policy",
                },
                force=True,
            )
        return self.info

    def stderr_tail(self) -> str:
        """The last few KiB of stderr, for an error message."""
        return b"".join(self._tail)[-TAIL_BYTES:].decode("utf-8", errors="replace")


def channel_prefix(channel: str) -> bytes:
    """What starts every runner record line on the container's stderr for this run."""
    return b"\x1edad:" + channel.encode() + b" "
