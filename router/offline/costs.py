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


def _fit(rows: Sequence[OutcomeRow], rung: str) -> tuple[float, float, float] | None:
    priced = [r for r in rows if rung in r.cost_usd and rung in r.responses and r.cost_usd[rung] > 0]
    if len(priced) < 10:
        return None
    x = np.asarray([[len(r.prompt), len(r.responses[rung])] for r in priced], dtype=np.float64)
    y = np.asarray([r.cost_usd[rung] for r in priced], dtype=np.float64)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    per_prompt, per_answer = (max(float(c), 0.0) for c in coef)
    return per_prompt, per_answer, float(np.median(x[:, 1]))


def fill_costs(rows: Sequence[OutcomeRow], pricing_rows: Sequence[OutcomeRow] | None = None) -> list[OutcomeRow]:
    """`rows` with every missing rung cost estimated from `pricing_rows` (default: `rows` themselves).

    Returns the rows and, on the side, nothing else: an estimated cost is indistinguishable from a
    recorded one afterwards, so reports say which tables had none (docs/router.md).
    """
    source = rows if pricing_rows is None else pricing_rows
    rungs = sorted({m for r in rows for m in r.scores})
    fits = {rung: _fit(source, rung) for rung in rungs}
    out: list[OutcomeRow] = []
    for row in rows:
        missing = [m for m in row.scores if m not in row.cost_usd and fits.get(m) is not None]
        if not missing:
            out.append(row)
            continue
        cost = dict(row.cost_usd)
        for rung in missing:
            fit = fits[rung]
            assert fit is not None
            per_prompt, per_answer, median_answer = fit
            answer = len(row.responses[rung]) if rung in row.responses else median_answer
            cost[rung] = max(per_prompt * len(row.prompt) + per_answer * answer, 1e-9)
        out.append(replace(row, cost_usd=cost))
    return out


def price_by_tokens(rows: Sequence[OutcomeRow], usd_per_million: Mapping[str, float]) -> list[OutcomeRow]:
    """`rows` with the missing cost of each model in `usd_per_million` set to its price for the
    prompt and the answer ((characters / 4) tokens each); a recorded cost is kept. A row without
    that model's answer is priced with the median answer length of the rows that have one."""
    prices = {canonical_model(m): p for m, p in usd_per_million.items()}
    lengths = {
        m: float(np.median([float(len(r.responses[m])) for r in rows if m in r.responses] or [0.0])) for m in prices
    }
    out: list[OutcomeRow] = []
    for row in rows:
        missing = [m for m in prices if m in row.scores and m not in row.cost_usd]
        if not missing:
            out.append(row)
            continue
        cost = dict(row.cost_usd)
        for m in missing:
            chars = len(row.prompt) + (len(row.responses[m]) if m in row.responses else lengths[m])
            cost[m] = chars / CHARS_PER_TOKEN * prices[m] / 1e6
        out.append(replace(row, cost_usd=cost))
    return out
