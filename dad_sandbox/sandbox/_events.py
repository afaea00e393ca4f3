"""Live events of one run, for ``async for event in handle.events()``.

Why a bounded feed and not an ``asyncio.Queue``: output arrives on the engine's pump thread, and
the run must never wait for whoever reads the events. :class:`EventFeed` keeps at most
``max_events`` events and ``max_bytes`` of text; beyond that an event is dropped and counted
(``RunEvent.dropped`` on the final status event says how many), so a slow or absent consumer costs
bounded memory and never blocks the run. The lines it sees are those the output sink kept, so the
feed also stays within the policy's output cap. The final ``status`` event is never dropped.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from dad_sandbox._limits import EVENTS_MAX_BYTES as MAX_BYTES
from dad_sandbox._limits import EVENTS_MAX_EVENTS as MAX_EVENTS
from dad_sandbox.errors import ExecutionStateError


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One live event: an ``output`` line, a runner ``record`` (node started/completed), or the final ``status``."""

    kind: Literal["output", "record", "status"]
    stream: str | None = None
    text: str = ""
    record: dict[str, Any] = field(default_factory=dict)
    status: str | None = None
    dropped: int = 0


class EventFeed:
    """A bounded, thread-safe buffer of one run's events, read by one consumer on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_events: int = MAX_EVENTS, max_bytes: int = MAX_BYTES) -> None:
        self._loop = loop
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._items: deque[RunEvent] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._closed = False
        self._taken = False
        self.dropped = 0

    # producers (any thread) ------------------------------------------------------------

    def output(self, stream: str, line: str) -> None:
        """OutputSink's line hook: a kept line of stdout or stderr."""
        self._put(RunEvent(kind="output", stream=stream, text=line), len(line))

    def record(self, record: dict[str, Any]) -> None:
        """ContainerRun's observer: a structured runner record."""
        self._put(RunEvent(kind="record", record=record), 256)

    def close(self, status: str) -> None:
        """The run ended: append the status event (never dropped) and end the stream."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._items.append(RunEvent(kind="status", status=status, dropped=self.dropped))
        self._notify()

    def _put(self, event: RunEvent, size: int) -> None:
        with self._lock:
            if self._closed:
                return
            if len(self._items) >= self._max_events or self._bytes + size > self._max_bytes:
                self.dropped += 1
                return
            self._items.append(event)
            self._bytes += size
        self._notify()

    def _notify(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop is closed: nobody is reading any more
            pass

    # consumer (the loop) ----------------------------------------------------------------

    async def stream(self) -> AsyncIterator[RunEvent]:
        """Yield events as they come; the last one is the run's status."""
        if self._taken:
            raise ExecutionStateError("events() can be read once per run; keep one `async for` loop over it")
        self._taken = True
        while True:
            with self._lock:
                event = self._items.popleft() if self._items else None
                if event is not None and event.kind == "output":
                    self._bytes -= len(event.text)
                elif event is not None and event.kind == "record":
                    self._bytes -= 256
                if event is None:
                    self._wake.clear()
            if event is None:
                await self._wake.wait()
                continue
            yield event
            if event.kind == "status":
                return


__all__ = ["EventFeed", "RunEvent"]
