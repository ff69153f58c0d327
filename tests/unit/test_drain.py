"""When a drain ends, on a clock the test sets (the signal plumbing is proven in tests/e2e/test_drain.py)."""

from __future__ import annotations

from gateway.drain import Drain


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_no_drain_until_it_begins() -> None:
    drain = Drain(10.0, clock=_Clock())
    assert not drain.draining
    assert not drain.over()


def test_a_drain_ends_once_nothing_is_in_flight_or_when_the_period_is_over() -> None:
    clock = _Clock()
    drain = Drain(10.0, clock=clock)
    drain.in_flight = 2
    drain.begin()
    assert drain.draining and not drain.over()
    drain.in_flight = 0
    assert drain.over()  # idle: no reason to wait
    drain.in_flight = 1
    clock.t += 9.9
    assert not drain.over()
    clock.t += 0.1
    assert drain.over()  # the period is over: what is left gets aborted


def test_a_held_drain_waits_the_whole_period_even_when_idle() -> None:
    clock = _Clock()
    drain = Drain(5.0, wait_full_period=True, clock=clock)
    drain.begin()
    assert not drain.over()
    clock.t += 5.0
    assert drain.over()


def test_a_second_begin_does_not_restart_the_period() -> None:
    clock = _Clock()
    drain = Drain(5.0, wait_full_period=True, clock=clock)
    drain.begin()
    clock.t += 3.0
    drain.begin()
    clock.t += 2.0
    assert drain.over()
