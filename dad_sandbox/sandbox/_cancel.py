"""Cancellation around engine calls that happen whatever the caller does."""

from __future__ import annotations

import asyncio
from typing import Any


async def run_to_the_end(task: asyncio.Future[Any]) -> bool:
    """Wait for ``task`` to finish even if we are cancelled meanwhile; return whether we were.

    Why: an engine call already sent (create, start, a stdin write) happens whatever we do; its
    outcome decides what cleaning up means (a container id to remove, a container that runs). The
    caller re-raises the cancellation once it has acted on the outcome.
    """
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    return cancelled
