"""Fit what a labelled sample can teach, in one order, for `router calibrate` and `router lobo`.

Three steps, each kept only where cross-validation within the sample shows it helps:
1. each rung's verifier head (`router.offline.refit`), when the sample has the cheaper rungs' answers;
2. the top rung's cost model (`router.offline.cost_refit`), which re-scales the priorities of step 1
   to the sample's own prices;
3. a lexical pre-router head per rung (`router.offline.lexical`), on the inputs after steps 1-2.
Both callers need the same order: calibration ships what it fitted, leave-one-benchmark-out judges
it on the rows it held back (`SampleFit.applied`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router.offline.cascade import CascadeInputs
from router.offline.cost_refit import CostRefit, refit_cost_model, with_cost_model
from router.offline.fit import FeatureCache, FittedParts
from router.offline.lexical import StartRefit, refit_start_heads, with_lexical_scores
from router.offline.outcomes import OutcomeRow
from router.offline.refit import Refit, refit_verifiers

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class SampleFit:
    """The sample's inputs after every step, and what each step fitted (None: step not run)."""

    inputs: CascadeInputs
    verifiers: Refit | None
    cost: CostRefit | None
    start: StartRefit | None

    def summary(self) -> dict[str, Any]:
        return {
            "verifier_heads": self.verifiers.summary if self.verifiers is not None else [],
            "start_heads": self.start.summary if self.start is not None else [],
            "cost_model": self.cost.summary if self.cost is not None else {},
        }

    def applied(self, inputs: CascadeInputs, rows: Sequence[OutcomeRow], prompt: FloatArray) -> CascadeInputs:
        """`inputs` of other `rows` (built with `verifiers.parts` when set) under the fitted cost and start heads."""
        if self.cost is not None and self.cost.refitted:
            inputs = with_cost_model(inputs, prompt, self.cost.cost_model, self.cost.reference_log_usd)
        if self.start is not None:
            inputs = with_lexical_scores(inputs, rows, self.start.heads)
        return inputs


def fit_to_sample(
    rows: Sequence[OutcomeRow],
    ladder: Sequence[str],
    parts: FittedParts,
    inputs: CascadeInputs,
    cache: FeatureCache,
    rungs_above: Sequence[int],
    *,
    answered: bool,
    refit: bool = True,
    seed: int = 7,
    progress: Callable[[str], None] | None = None,
) -> SampleFit:
    """Run the steps on `rows` (row i of `inputs` and `cache` is rows[i]); `parts` are the transferred ones.

    `rungs_above` is, per rung but the top, how many rungs of the model's own ladder lie above it.
    Without `refit`, nothing is fitted and `inputs` come back as they are.
    """
    if not refit:
        return SampleFit(inputs, None, None, None)
    say = progress or (lambda _: None)
    verifiers = None
    if answered:
        verifiers = refit_verifiers(rows, ladder, parts, inputs, cache.prompt, cache.memo, rungs_above, seed=seed)
        inputs = verifiers.inputs
        say(f"verifier heads: {[h['head'] for h in verifiers.summary]}")
    cost = refit_cost_model(rows, inputs, cache.prompt, parts.cost_model, parts.cost_reference_log_usd, seed=seed)
    inputs = cost.inputs
    say(f"cost model: {cost.summary['model']}")
    start = refit_start_heads(rows, inputs, seed=seed)
    say(f"pre-router heads: {[h['head'] for h in start.summary]}")
    return SampleFit(start.inputs, verifiers, cost, start)
