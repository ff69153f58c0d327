"""A routing change is prepared off the event loop (a learned policy loads its artifact) and installed
on it, whole: requests keep being served meanwhile, and none sees half a policy."""

from __future__ import annotations

import asyncio
import threading

from deployments.profile import Profile, RoutingSpec, load_profile
from gateway.state import AppState, RouterParts


async def test_a_slow_policy_load_leaves_the_event_loop_serving() -> None:
    state = AppState(load_profile("test-fake", apply_env=False))
    old = state.profile
    routing = old.routing.model_copy(update={"thresholds": [0.25, 0.75]})
    started, release = threading.Event(), threading.Event()
    prepare = state.prepare_routing

    def slow_prepare(r: RoutingSpec) -> tuple[Profile, RouterParts]:
        started.set()
        release.wait(10)  # the artifact load, held until the loop has shown it still runs
        return prepare(r)

    state.prepare_routing = slow_prepare  # type: ignore[assignment,method-assign]
    applying = asyncio.create_task(state.apply_routing(routing))
    assert await asyncio.to_thread(started.wait, 10)
    # The loop runs other work while the load is under way, and the old policy still serves.
    ticks = 0
    for _ in range(5):
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 5 and not applying.done()
    assert state.profile is old
    release.set()
    await applying
    assert state.profile.routing.thresholds == [0.25, 0.75]
    assert state.service.profile is state.profile
