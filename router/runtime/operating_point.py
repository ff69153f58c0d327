"""The cascade's operating point: the thresholds the runtime applies, stored in the artifact.

Chosen offline (router.offline.cascade.choose_operating_point, re-chosen on an operator's own
traffic by router.offline.calibrate) but read per request, so it lives with the runtime that uses
it; the offline side imports it from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Start thresholds (pre-router) and verifier thresholds, one per rung but the top.

    `start_mix` empty: a request starts at the first rung whose prompt score is under its start
    threshold. `start_mix` set (one share per rung, summing to 1): the start rung is drawn from that
    mix by a hash of the prompt, and `start_thresholds` hold the cumulative shares, so the gateway's
    threshold policy runs the same mix when the scorer returns that hash (`LearnedScorer`). A
    verifier threshold of 1e6 never escalates (a priority is at most 20), -1.0 always does.
    """

    start_thresholds: tuple[float, ...]
    verify_thresholds: tuple[float, ...]
    start_mix: tuple[float, ...] = ()
    # Start scores compared per relative top-rung cost (gain per dollar, as the verifier's priority
    # is): a prompt the top rung would charge much for needs a higher P(not good enough) to start there.
    start_per_cost: bool = False

    @property
    def mixes(self) -> bool:
        return bool(self.start_mix)


def cumulative_shares(mix: tuple[float, ...]) -> tuple[float, ...]:
    """Start thresholds that run `mix` (shares per rung) under the first-rung-under-threshold rule."""
    total = 0.0
    out = []
    for share in mix[:-1]:
        total += share
        out.append(min(max(total, 0.0), 1.0))
    return tuple(out)
