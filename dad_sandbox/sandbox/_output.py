"""Container stdout/stderr into ``.trace/logs.jsonl``: streamed, capped, never buffered whole.

The pump thread hands raw chunks to :class:`OutputSink`, which splits them into lines, writes one
JSON record per line straight to the file (opened without following links), and keeps only a small
tail of stderr in memory for error messages. Past the policy's byte cap, output is counted and
dropped, and a final record says how much. Invalid UTF-8 is replaced, never fatal, and the line is
kept.
"""

from __future__ import annotations

import json
import os
from collections import deque
from datetime import UTC, datetime

from dad_sandbox.run._metadata import OutputInfo

MAX_LINE_BYTES = 64 << 10
TAIL_BYTES = 8 << 10


class OutputSink:
    """Turns output chunks into JSONL records on an open file descriptor, under a byte cap."""

    def __init__(self, fd: int, *, limit: int, run_id: str) -> None:
        self._fd = fd
        self._limit = limit
        self._run_id = run_id
        self._partial: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self.info = OutputInfo()

    def __call__(self, stream: str, chunk: bytes) -> None:
        self.info.bytes_total += len(chunk)
        if stream == "stderr":
            self._remember(chunk)
        buf = self._partial[stream]
        buf += chunk
        while True:
            cut = buf.find(b"\n", 0, MAX_LINE_BYTES + 1)
            if cut >= 0:
                self._emit(stream, bytes(buf[:cut]), partial=False)
                del buf[: cut + 1]
            elif len(buf) > MAX_LINE_BYTES:
                self._emit(stream, bytes(buf[:MAX_LINE_BYTES]), partial=True)
                del buf[:MAX_LINE_BYTES]
            else:
                break

    def _remember(self, chunk: bytes) -> None:
        self._tail.append(chunk[-TAIL_BYTES:])
        self._tail_size += len(self._tail[-1])
        while self._tail_size > TAIL_BYTES and len(self._tail) > 1:
            self._tail_size -= len(self._tail.popleft())

    def _emit(self, stream: str, line: bytes, *, partial: bool) -> None:
        size = len(line) + 1
        if self.info.truncated or self.info.bytes_kept + size > self._limit:
            self.info.truncated = True
            self.info.bytes_dropped += size
            return
        text = line.decode("utf-8", errors="replace")
        record: dict[str, object] = {
            "ts": datetime.now(UTC).isoformat(),
            "run_id": self._run_id,
            "source": "container",
            "stream": stream,
            "message": text,
        }
        if partial:
            record["partial"] = True
        if "\ufffd" in text and b"\xef\xbf\xbd" not in line:
            record["invalid_utf8"] = True
        self._write(record)
        self.info.bytes_kept += size
        self.info.lines_kept += 1

    def _write(self, record: dict[str, object]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def finish(self) -> OutputInfo:
        """Flush unterminated lines and record the truncation; return the accounting."""
        for stream, buf in self._partial.items():
            if buf:
                self._emit(stream, bytes(buf), partial=True)
                buf.clear()
        if self.info.truncated:
            self._write(
                {
                    "ts": datetime.now(UTC).isoformat(),
                    "run_id": self._run_id,
                    "source": "dad-sandbox",
                    "stream": "supervisor",
                    "message": f"output truncated: {self.info.bytes_dropped} bytes dropped over the "
                    f"{self._limit}-byte limit of the policy",
                }
            )
        return self.info

    def stderr_tail(self) -> str:
        """The last few KiB of stderr, for an error message."""
        return b"".join(self._tail)[-TAIL_BYTES:].decode("utf-8", errors="replace")
