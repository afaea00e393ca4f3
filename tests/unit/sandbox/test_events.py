"""The bounded event feed behind ``RunHandle.events()``."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dad_sandbox.errors import ExecutionStateError
from dad_sandbox.sandbox._events import EventFeed


def test_feed_bounds_counts_and_ends_with_status() -> None:
    """Past the bound events are dropped and counted; the status is appended anyway and ends the stream."""

    async def main() -> list:
        feed = EventFeed(asyncio.get_running_loop(), max_events=3)
        for i in range(5):
            feed.output("stdout", str(i))
        feed.close("completed")
        feed.output("stdout", "after close")
        return [e async for e in feed.stream()]

    events = asyncio.run(main())
    assert [e.text for e in events[:-1]] == ["0", "1", "2"]
    assert events[-1].kind == "status" and events[-1].status == "completed" and events[-1].dropped == 2


def test_feed_takes_events_from_another_thread_in_order() -> None:
    """Lines put from a pump thread arrive in order while the consumer waits."""

    async def main() -> list:
        feed = EventFeed(asyncio.get_running_loop())

        def pump() -> None:
            for i in range(100):
                feed.output("stdout", str(i))
            feed.close("failed")

        threading.Timer(0.05, pump).start()
        return [e async for e in feed.stream()]

    events = asyncio.run(main())
    assert [e.text for e in events[:-1]] == [str(i) for i in range(100)] and events[-1].status == "failed"


def test_feed_is_read_once() -> None:
    """A second reader is refused instead of silently splitting the events."""

    async def main() -> None:
        feed = EventFeed(asyncio.get_running_loop())
        feed.close("completed")
        _ = [e async for e in feed.stream()]
        with pytest.raises(ExecutionStateError):
            _ = [e async for e in feed.stream()]

    asyncio.run(main())
