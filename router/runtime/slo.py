"""Latency budgets and per-tier latency estimates for one request.

An estimate starts from planner priors (a fixed time to first token, prefill time per prompt token,
decode time per output token at batch 1 and at the engine's full batch) and is corrected online:

- by what the gateway observes: an exponentially weighted mean of observed / predicted, one for
  time to first token and one for the time between tokens, per serving engine: tiers served by one
  engine share its KV cache, batch and queue, so the load-driven slowdown one of them sees is the
  other's too (the answers' typical length stays per tier: each tier gets its own traffic);
- by the tier's load: running and waiting sequences. A request that finds the engine's batch full
  waits for slots to free; decode slows as the batch fills.

The load comes from the engine's own counters where the tier exposes them (vLLM's
`num_requests_running` / `num_requests_waiting`): every gateway replica reads the same engine, so
the estimate stays right with N gateway processes. Where it does not, the caller passes its own
in-flight count, which under-counts by the traffic of the other replicas; `TierLoad.source` says
which one was used. Pure: no clock, no I/O; the gateway feeds observations in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

# Observed / predicted ratios are kept within these bounds so one stalled request (a GC pause,
# a cold engine) cannot make a tier look 100x slower for the next hundred requests.
_MIN_RATIO = 0.1
_MAX_RATIO = 20.0
# Weight of the newest observation; about the last 10 requests dominate the mean.
DEFAULT_ALPHA = 0.2
# Output length assumed before a tier has answered anything (tokens); capped by max_tokens.
DEFAULT_OUTPUT_TOKENS = 128


@dataclass(frozen=True, slots=True)
class LatencyPrior:
    """What the planner expects of one tier (milliseconds), before any observation."""

    ttft_fixed_ms: float
    prefill_ms_per_token: float
    decode_ms_per_token: float
    decode_ms_per_token_full_batch: float
    max_batch: int

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if min(self.ttft_fixed_ms, self.prefill_ms_per_token, self.decode_ms_per_token) < 0:
            raise ValueError("latency priors must not be negative")

    def decode_ms_at(self, batch: float) -> float:
        """Inter-token time with `batch` sequences decoding together (linear between 1 and full)."""
        if self.max_batch <= 1:
            return self.decode_ms_per_token
        frac = min(max((batch - 1.0) / (self.max_batch - 1.0), 0.0), 1.0)
        return self.decode_ms_per_token + frac * (self.decode_ms_per_token_full_batch - self.decode_ms_per_token)


@dataclass(frozen=True, slots=True)
class TierLoad:
    """Sequences the engine is running and holding in its queue when the request arrives."""

    running: float = 0.0
    waiting: float = 0.0
    source: Literal["engine", "gateway", "none"] = "none"


@dataclass(frozen=True, slots=True)
class Estimate:
    """Expected time to first token and to the last token of one request on one tier (ms)."""

    ttft_ms: float
    total_ms: float


@dataclass(frozen=True, slots=True)
class Budget:
    """A request's latency budget; None means no bound on that part."""

    ttft_ms: float | None = None
    total_ms: float | None = None

    def met_by(self, estimate: Estimate, spent_ms: float = 0.0) -> bool:
        """True when `estimate`, started after `spent_ms` of the budget is gone, fits it."""
        if self.ttft_ms is not None and spent_ms + estimate.ttft_ms > self.ttft_ms:
            return False
        return not (self.total_ms is not None and spent_ms + estimate.total_ms > self.total_ms)

    def met(self, ttft_ms: float | None, total_ms: float) -> bool:
        """Whether an observed request kept its budget (no first token counts as its total)."""
        first = total_ms if ttft_ms is None else ttft_ms
        if self.ttft_ms is not None and first > self.ttft_ms:
            return False
        return not (self.total_ms is not None and total_ms > self.total_ms)


@dataclass(slots=True)
class _EngineState:
    """What one engine's observations teach: how much slower or faster than its prior it runs."""

    prior: LatencyPrior
    ttft_ratio: float = 1.0
    itl_ratio: float = 1.0
    observations: int = 0


@dataclass(slots=True)
class _TierState:
    engine: _EngineState
    output_tokens: float = float(DEFAULT_OUTPUT_TOKENS)


@dataclass
class LatencyEstimator:
    """Per-tier estimates: planner priors corrected by observations and the tier's load.

    `engines` maps a tier to the engine serving it (a tier not named there has an engine of its
    own). Tiers of one engine share its correction factors, so they must share one prior too: a
    ratio learned against one prior means nothing against another.
    """

    priors: Mapping[str, LatencyPrior]
    alpha: float = DEFAULT_ALPHA
    engines: Mapping[str, str] = field(default_factory=dict)
    _state: dict[str, _TierState] = field(init=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError("alpha must lie in (0, 1]")
        shared: dict[str, tuple[str, _EngineState]] = {}
        self._state = {}
        for name, prior in self.priors.items():
            engine = self.engines.get(name, name)
            first, state = shared.setdefault(engine, (name, _EngineState(prior)))
            if state.prior != prior:
                raise ValueError(f"tiers {first!r} and {name!r} share engine {engine!r} but not a latency prior")
            self._state[name] = _TierState(state)

    def _base_ttft_ms(self, state: _TierState, prompt_tokens: int) -> float:
        p = state.engine.prior
        return p.ttft_fixed_ms + p.prefill_ms_per_token * max(prompt_tokens, 0)

    def _queue_ms(self, state: _TierState, load: TierLoad, prompt_tokens: int) -> float:
        # A request beyond the engine's batch waits until enough running sequences finish: with
        # `excess` sequences ahead of it, roughly excess / max_batch typical requests' time.
        engine = state.engine
        p = engine.prior
        excess = load.running + load.waiting + 1.0 - p.max_batch
        if excess <= 0:
            return 0.0
        typical = self._base_ttft_ms(state, prompt_tokens) * engine.ttft_ratio + state.output_tokens * (
            p.decode_ms_at(p.max_batch) * engine.itl_ratio
        )
        return math.ceil(excess / p.max_batch) * typical

    def estimate(self, tier: str, prompt_tokens: int, max_tokens: int | None, load: TierLoad | None = None) -> Estimate:
        """Expected TTFT and total time of a request of this size on `tier` under `load`."""
        state = self._state[tier]
        engine = state.engine
        load = load or TierLoad()
        out = state.output_tokens if max_tokens is None else min(state.output_tokens, float(max_tokens))
        ttft = self._base_ttft_ms(state, prompt_tokens) * engine.ttft_ratio + self._queue_ms(state, load, prompt_tokens)
        batch = min(load.running + 1.0, float(engine.prior.max_batch))
        decode = max(out - 1.0, 0.0) * engine.prior.decode_ms_at(batch) * engine.itl_ratio
        return Estimate(ttft_ms=ttft, total_ms=ttft + decode)

    def observe(
        self,
        tier: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        ttft_ms: float | None,
        total_ms: float,
        load: TierLoad | None = None,
    ) -> None:
        """Fold one finished request's timings into the corrections of the tier's engine (and the
        answer's length into the tier's own typical length).

        `ttft_ms` is None for an unstreamed answer (only its total was seen): the first token is
        then taken to have come when the current estimate says, and only decode is corrected.
        """
        state = self._state.get(tier)
        if state is None or not math.isfinite(total_ms) or (ttft_ms is not None and not math.isfinite(ttft_ms)):
            return
        load = load or TierLoad()
        a = self.alpha
        engine = state.engine
        # The prediction at the load the request met (queue wait included): the ratio learns only
        # what the load model leaves out, so a busy period is not counted again by `estimate`.
        # With no load the queue is zero and the learnt ratio is ttft_ms / base, as before.
        predicted_ttft = self._base_ttft_ms(state, prompt_tokens) * engine.ttft_ratio + self._queue_ms(
            state, load, prompt_tokens
        )
        if ttft_ms is None:
            ttft_ms = min(predicted_ttft, total_ms)
        elif predicted_ttft > 0 and ttft_ms > 0:
            engine.ttft_ratio = _blend(engine.ttft_ratio, engine.ttft_ratio * ttft_ms / predicted_ttft, a)
        if completion_tokens > 1 and total_ms > ttft_ms:
            batch = min(load.running + 1.0, float(engine.prior.max_batch))
            predicted_itl = engine.prior.decode_ms_at(batch)
            if predicted_itl > 0:
                observed_itl = (total_ms - ttft_ms) / (completion_tokens - 1)
                engine.itl_ratio = _blend(engine.itl_ratio, observed_itl / predicted_itl, a)
        if completion_tokens > 0:
            state.output_tokens = (1 - a) * state.output_tokens + a * completion_tokens
        engine.observations += 1

    def corrections(self, tier: str) -> dict[str, float]:
        """The tier's current correction factors (for /admin and tests); the ratios and their
        observation count are its engine's, the output length the tier's own."""
        s = self._state[tier]
        return {
            "ttft_ratio": s.engine.ttft_ratio,
            "itl_ratio": s.engine.itl_ratio,
            "output_tokens": s.output_tokens,
            "observations": float(s.engine.observations),
        }


def _blend(old: float, ratio: float, alpha: float) -> float:
    ratio = min(max(ratio, _MIN_RATIO), _MAX_RATIO)
    return (1 - alpha) * old + alpha * ratio
