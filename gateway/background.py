"""Background loops of one gateway process (tier probes, engine-load scrapes, policy reloads)."""

from __future__ import annotations

import asyncio
import contextlib


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a background loop and wait until it has stopped (its CancelledError is expected)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
