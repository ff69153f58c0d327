"""The cascade's operating point: the thresholds the runtime applies, stored in the artifact.

Chosen offline (router.offline.cascade.choose_operating_point) but read per request, so it lives
with the runtime that uses it; the offline side imports it from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Start thresholds (pre-router) and verifier thresholds, one per rung but the top."""

    start_thresholds: tuple[float, ...]
    verify_thresholds: tuple[float, ...]
