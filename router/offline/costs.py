"""Filling in the cost of rows whose table recorded none, from the rows that did.

Some tables record answers but no prices (a GSM8K table), some neither. A cascade or a mix can
only be priced when every rung has a cost, so a rung's missing cost is estimated from the rows
that priced it: a least-squares fit of cost on prompt and answer length (characters), which is
how providers bill. A rung no row prices stays unpriced; such rows are left out of cost figures,
unless the operator gives its price per million tokens (`price_by_tokens`, `--price` on the CLI).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from router.offline.outcomes import OutcomeRow, canonical_model

# Tokens are estimated as characters / 4 where no tokenizer is at hand (as the gateway counts).
CHARS_PER_TOKEN = 4.0
# Per rung: USD per prompt character, USD per answer character, and the answer length (characters)
# assumed for a row that has no answer of that rung.
Pricing = tuple[float, float, float]


def _fit(rows: Sequence[OutcomeRow], rung: str) -> Pricing | None:
    priced = [r for r in rows if rung in r.cost_usd and rung in r.responses and r.cost_usd[rung] > 0]
    if len(priced) < 10:
        return None
    x = np.asarray([[len(r.prompt), len(r.responses[rung])] for r in priced], dtype=np.float64)
    y = np.asarray([r.cost_usd[rung] for r in priced], dtype=np.float64)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    per_prompt, per_answer = (max(float(c), 0.0) for c in coef)
    return per_prompt, per_answer, float(np.median(x[:, 1]))


def _with_missing_costs(rows: Sequence[OutcomeRow], pricing: Mapping[str, Pricing]) -> list[OutcomeRow]:
    """`rows` with each priced rung's missing cost set from its `pricing`; a recorded cost is kept."""
    out: list[OutcomeRow] = []
    for row in rows:
        missing = [m for m in row.scores if m not in row.cost_usd and m in pricing]
        if not missing:
            out.append(row)
            continue
        cost = dict(row.cost_usd)
        for rung in missing:
            per_prompt, per_answer, median_answer = pricing[rung]
            answer = len(row.responses[rung]) if rung in row.responses else median_answer
            cost[rung] = max(per_prompt * len(row.prompt) + per_answer * answer, 1e-9)
        out.append(replace(row, cost_usd=cost))
    return out


def fill_costs(rows: Sequence[OutcomeRow], pricing_rows: Sequence[OutcomeRow] | None = None) -> list[OutcomeRow]:
    """`rows` with every missing rung cost estimated from `pricing_rows` (default: `rows` themselves).

    Returns the rows and, on the side, nothing else: an estimated cost is indistinguishable from a
    recorded one afterwards, so reports say which tables had none (docs/router.md).
    """
    source = rows if pricing_rows is None else pricing_rows
    rungs = sorted({m for r in rows for m in r.scores})
    fits = {rung: _fit(source, rung) for rung in rungs}
    return _with_missing_costs(rows, {rung: fit for rung, fit in fits.items() if fit is not None})


def price_by_tokens(rows: Sequence[OutcomeRow], usd_per_million: Mapping[str, float]) -> list[OutcomeRow]:
    """`rows` with the missing cost of each model in `usd_per_million` set to its price for the
    prompt and the answer ((characters / 4) tokens each); a recorded cost is kept. A row without
    that model's answer is priced with the median answer length of the rows that have one."""
    pricing: dict[str, Pricing] = {}
    for model, usd in usd_per_million.items():
        m = canonical_model(model)
        per_char = usd / 1e6 / CHARS_PER_TOKEN
        lengths = [float(len(r.responses[m])) for r in rows if m in r.responses]
        pricing[m] = (per_char, per_char, float(np.median(lengths)) if lengths else 0.0)
    return _with_missing_costs(rows, pricing)
