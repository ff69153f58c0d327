"""Cancel the work of a request the moment its caller hangs up.

The ASGI server reports a departed client as an `http.disconnect` message on `receive`. A watcher
task waits for it and cancels the task doing the work; cancelling an aiohttp request closes its
connection, and the tier (vLLM, or the fake) aborts the generation.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from starlette.types import Receive


class DisconnectWatch:
    """`async with DisconnectWatch(receive) as w: ...`; afterwards `w.gone` says whether the caller left.

    A cancellation caused by the disconnect is absorbed on exit; any other cancellation propagates.
    """

    __slots__ = ("_receive", "_task", "_watcher", "gone")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Task[object] | None = None
        self._watcher: asyncio.Future[None] | None = None
        self.gone = False

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                if self._task is not None:
                    self._task.cancel()
                return

    async def __aenter__(self) -> DisconnectWatch:
        self._task = asyncio.current_task()
        self._watcher = asyncio.ensure_future(self._watch())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if self._watcher is not None:
            self._watcher.cancel()
        if exc_type is asyncio.CancelledError and self.gone and self._task is not None:
            self._task.uncancel()
            return True
        return False
