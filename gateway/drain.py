"""Graceful drain: on SIGTERM (or Ctrl-C) keep serving for a while, with readiness false, then stop.

uvicorn's own handler stops accepting connections the moment a signal arrives, so a load balancer
that has not yet noticed would see refused connections. `tiergate serve` therefore lets the app
take the signal first (`Drain.install`, from the app's lifespan, after uvicorn has installed its
handlers): `/readyz` answers 503 ("draining") at once, every request in flight and every request
that still arrives is served, and only when the drain ends is uvicorn's handler called, which stops
listening and aborts what is left after its short graceful timeout.

The drain ends `drain_period_s` after the signal, or as soon as nothing is in flight unless the
profile asks to hold the whole period (`drain_wait_full_period`, behind a Kubernetes Service whose
endpoints take a moment to update). While draining, responses carry `Connection: close`, so a
keep-alive client opens its next connection wherever the balancer now sends it. A second Ctrl-C
stops at once; further SIGTERMs are ignored (a `--workers` parent sends one after the terminal's
SIGINT).

`Drain` itself is plain state with an injected clock; the signal plumbing is its `install`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("tiergate")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_POLL_S = 0.05


class Drain:
    """When a drain began, what is in flight, and whether the drain is over."""

    def __init__(
        self, period_s: float, *, wait_full_period: bool = False, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.period_s = period_s
        self.wait_full_period = wait_full_period
        self.clock = clock
        self.in_flight = 0
        self.started_at: float | None = None
        self._previous: dict[int, Any] = {}
        self._first_signal: int | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def begin(self) -> None:
        if self.started_at is None:
            self.started_at = self.clock()

    def over(self) -> bool:
        """True once the period has passed, or (unless holding it) once nothing is in flight."""
        if self.started_at is None:
            return False
        if self.clock() - self.started_at >= self.period_s:
            return True
        return not self.wait_full_period and self.in_flight == 0

    # -- signals ----------------------------------------------------------------------------------

    def install(self) -> None:
        """Take SIGTERM and SIGINT ahead of the server's handlers (call from the running loop).

        Does nothing off the main thread, or where no callable handler is installed (an embedding
        application that manages signals itself).
        """
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            previous = signal.getsignal(sig)
            if callable(previous):
                self._previous[sig] = previous
                signal.signal(sig, lambda s, f: self._on_signal(loop, s, f))

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    async def stop(self) -> None:
        """Forget the signals and stop watching (the app's lifespan ends)."""
        self.uninstall()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_signal(self, loop: asyncio.AbstractEventLoop, sig: int, frame: FrameType | None) -> None:
        if self.draining:
            if sig == signal.SIGINT and self._first_signal == signal.SIGINT:
                self._hand_over(sig, frame)  # a second Ctrl-C: stop now
            return
        self._first_signal = sig
        self.begin()
        # From a signal handler only the thread-safe entry into the loop is safe.
        loop.call_soon_threadsafe(self._watch, sig)

    def _watch(self, sig: int) -> None:
        name = signal.Signals(sig).name
        hold = "holding the whole period" if self.wait_full_period else "or until nothing is in flight"
        log.warning("%s: draining for up to %.1f s (%s); /readyz answers 503", name, self.period_s, hold)
        self._task = asyncio.get_running_loop().create_task(self._until_over(sig))

    async def _until_over(self, sig: int) -> None:
        # Polled rather than signalled: the in-flight count is a plain int on the hot path, and
        # looking at it 20 times a second during a drain costs nothing there.
        while not self.over():  # noqa: ASYNC110
            await asyncio.sleep(_POLL_S)
        log.warning("drain over with %d request(s) in flight; stopping", self.in_flight)
        self._hand_over(sig, None)

    def _hand_over(self, sig: int, frame: FrameType | None) -> None:
        previous = self._previous.get(sig)
        if previous is not None:
            previous(sig, frame)


class DrainMiddleware:
    """Outermost layer: counts requests in flight, and asks clients to reconnect elsewhere while draining."""

    def __init__(self, app: ASGIApp, *, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        drain = self.drain
        if drain.draining:
            # Only while draining: the wrapper costs a call per message, which the hot path does not pay.
            send = _closing(send)
        drain.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            drain.in_flight -= 1


def _closing(send: Send) -> Send:
    async def send_closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
        await send(message)

    return send_closing
