"""Progress of a run on the terminal: a live status line on a TTY, plain lines otherwise.

Fed by ``IsolatedExecution(on_event=…)`` from the output pump thread; a small ticker thread
redraws the line (status, elapsed, current node) so the display never slows collection.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

from dad_sandbox._terminal import printable

_SPIN = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Progress:
    """Shows what a run is doing while it runs."""

    def __init__(
        self, label: str, *, stream: IO[str] | None = None, interactive: bool | None = None, quiet: bool = False
    ) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.quiet = quiet
        self.label = label
        self.current: str | None = None
        self.done_nodes = 0
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._announced = False

    def __enter__(self) -> Progress:
        if self.quiet:
            return self
        if self.interactive:
            self._thread = threading.Thread(target=self._tick, name="dad-progress", daemon=True)
            self._thread.start()
        # plain lines start with the first node: a request refused before any node shows only its error
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
            self.stream.write("\r\033[K")
            self.stream.flush()

    def observe(self, record: dict[str, Any]) -> None:
        """An ``on_event`` callback: tracks the node being run."""
        event, node = record.get("event"), (record.get("fields") or {}).get("node")
        node = printable(str(node)[:200], keep_newlines=False) if node is not None else None  # run data
        with self._lock:
            if event == "node started":
                self.current = node
            elif event in ("node completed", "node failed"):
                self.done_nodes += 1
        if not self.quiet and not self.interactive and event in ("node started", "node completed", "node failed") and node:
            if not self._announced:
                self._announced = True
                self._print(f"{self.label}: started")
            self._print(f"{self.label}: {event} {node}")

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def _tick(self) -> None:
        i = 0
        while not self._stop.wait(0.1):
            with self._lock:
                node = f"  node {self.current}" if self.current else ""
                done = f"  {self.done_nodes} done" if self.done_nodes else ""
            elapsed = time.monotonic() - self._t0
            self.stream.write(f"\r\033[K{_SPIN[i % len(_SPIN)]} {self.label}  running  {elapsed:5.1f}s{done}{node}")
            self.stream.flush()
            i += 1
