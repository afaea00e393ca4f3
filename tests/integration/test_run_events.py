"""Live run events: ``RunHandle.events()`` on real containers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from dad_sandbox import Supervisor


async def _collect(handle) -> list:
    return [event async for event in handle.events()]


def test_events_show_lines_in_order_then_status(project: Path) -> None:
    """A run printing lines yields them in order, as output events, and ends with its status."""

    async def main() -> list:
        async with Supervisor(project_root=project, max_parallel=1) as sup:
            handle = sup.submit(["/bin/sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; echo err >&2"])
            return await _collect(handle)

    events = asyncio.run(main())
    out = [(e.stream, e.text) for e in events if e.kind == "output"]
    assert [t for s, t in out if s == "stdout"] == [f"line{i}" for i in range(1, 6)]
    assert ("stderr", "err") in out
    assert events[-1].kind == "status" and events[-1].status == "completed" and events[-1].dropped == 0


def test_events_arrive_while_the_run_goes_on(project: Path) -> None:
    """The first line is seen before the run ends (live, not replayed after the fact)."""

    async def main() -> tuple[bool, str]:
        async with Supervisor(project_root=project, max_parallel=1) as sup:
            handle = sup.submit(["/bin/sh", "-c", "echo first; sleep 3; echo second"])
            async for event in handle.events():
                if event.kind == "output":
                    return handle.done(), event.text
            return True, ""

    done, text = asyncio.run(main())
    assert text == "first" and done is False


def test_component_records_and_status(project: Path) -> None:
    """A component run yields the runner's node records before the final status."""
    from sbx_components.flows import In

    async def main() -> list:
        async with Supervisor(project_root=project, max_parallel=1) as sup:
            handle = sup.submit(component="sbx_components.flows:ok_agent", static_inputs={"first": In(name="v")})
            return await _collect(handle)

    events = asyncio.run(main())
    names = [e.record.get("event") for e in events if e.kind == "record"]
    assert any("started" in str(n) for n in names) and any("completed" in str(n) for n in names), names
    assert events[-1].kind == "status" and events[-1].status == "completed"


def test_slow_consumer_never_blocks_the_run(project: Path) -> None:
    """A flood nobody reads completes anyway; the excess events are dropped and counted, the status comes last."""

    async def main() -> tuple[str, float, list]:
        async with Supervisor(project_root=project, max_parallel=1) as sup:
            handle = sup.submit(["/bin/sh", "-c", "seq 1 20000"])
            t0 = time.monotonic()
            result = await handle.wait()  # nobody reads events meanwhile
            waited = time.monotonic() - t0
            return result.status.value, waited, await _collect(handle)

    status, waited, events = asyncio.run(main())
    assert status == "completed" and waited < 120
    lines = [e.text for e in events if e.kind == "output"]
    assert lines[:3] == ["1", "2", "3"] and 0 < len(lines) < 20000
    assert events[-1].kind == "status" and events[-1].dropped == 20000 - len(lines)
