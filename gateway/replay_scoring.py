"""`tiergate replay`'s pure half: arrivals, scoring, the report and its table and plot.

The process side (replay tiers, the gateway, driving it over HTTP) is gateway/replay.py.

Scoring, kept pure in `score_answer` / `summarize` / `compare`:
- quality: the recorded score of the model whose answer came back (the `x-tiergate-tier` header
  names the tier, the tier names the model; without the header the answer text is matched against
  the recorded answers). A failed request scores 0: an error is not an answer.
- cost: the gateway's `x-tiergate-cost-usd` when it sends one (it covers every attempt of a
  cascade), else (prompt + completion tokens) x the tier's USD per token. That price is the
  planner's: the GPUs' hourly price over the tokens a full batch decodes in an hour (see
  `gateway.replay_tier.LatencyPlan`). Prompt tokens are billed at the decode rate, an upper bound
  that treats every tier alike, so the ratios are driven by the per-tier price.
- SLO: the gateway's `x-tiergate-slo: met|missed` when sent, else total time within the class
  budget (realtime 100 ms, interactive 1 s, batch 10 s). Latency is measured from the scheduled
  arrival, so a request the client could not send on time still counts its wait (no coordinated
  omission). Without `--stream` the first token arrives with the whole answer, so TTFT = total.
- escalations: the `x-tiergate-escalations` header, 0 when absent.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.replay_tier import ReplayError
from router.offline.outcomes import OutcomeRow

TIERS: tuple[str, ...] = ("small", "mid", "large")
DEFAULT_BUDGETS_MS: dict[str, float] = {"realtime": 100.0, "interactive": 1000.0, "batch": 10000.0}
DEFAULT_SLO_MIX: dict[str, float] = {"realtime": 0.2, "interactive": 0.5, "batch": 0.3}
BASELINES: tuple[str, ...] = ("always_small", "always_mid", "always_large", "random")
METRIC_KEYS = ("quality_ratio", "cost_ratio", "slo_attainment", "escalation_rate", "p50_ttft_ms", "p99_ttft_ms")


# ---------------------------------------------------------------- pure: inputs and scoring


def parse_slo_mix(text: str) -> dict[str, float]:
    """'realtime=0.2,interactive=0.5,batch=0.3' -> shares summing to 1 (given weights are normalised)."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in DEFAULT_BUDGETS_MS:
            raise ReplayError(
                f"--slo-mix entry {part!r} is not CLASS=WEIGHT with CLASS in {', '.join(DEFAULT_BUDGETS_MS)}"
            )
        try:
            weight = float(value)
        except ValueError:
            raise ReplayError(f"--slo-mix weight {value!r} is not a number") from None
        if weight < 0 or not math.isfinite(weight):
            raise ReplayError(f"--slo-mix weight of {name} must be a finite number >= 0")
        mix[name] = weight
    total = sum(mix.values())
    if total <= 0:
        raise ReplayError("--slo-mix needs at least one positive weight")
    return {k: v / total for k, v in mix.items()}


@dataclass(frozen=True, slots=True)
class Arrival:
    at_s: float  # scheduled send time after the run's start
    prompt: int  # index into the prompt list
    latency_class: str
    random_tier: str  # the tier the random baseline sends this arrival to


def poisson_arrivals(
    n_prompts: int,
    rate: float,
    duration_s: float,
    mix: Mapping[str, float],
    seed: int,
    max_requests: int | None = None,
) -> list[Arrival]:
    """Exponential gaps at `rate` per second over `duration_s`; prompts visited in a shuffled cycle
    so a short run covers distinct prompts; classes drawn from `mix`. Deterministic for a seed."""
    if n_prompts < 1 or rate <= 0 or duration_s <= 0:
        raise ReplayError("need at least one prompt, a rate > 0 and a duration > 0")
    rng = random.Random(seed)
    order = list(range(n_prompts))
    rng.shuffle(order)
    classes, weights = list(mix), list(mix.values())
    out: list[Arrival] = []
    t = rng.expovariate(rate)
    while t < duration_s and (max_requests is None or len(out) < max_requests):
        out.append(Arrival(t, order[len(out) % n_prompts], rng.choices(classes, weights)[0], rng.choice(TIERS)))
        t += rng.expovariate(rate)
    return out


@dataclass(frozen=True, slots=True)
class Observed:
    """One request's outcome as the harness saw it."""

    latency_class: str
    status: int  # HTTP status; 0 when no answer came (connection error, client timeout)
    ok: bool
    tier: str | None
    score: float
    cost_usd: float
    ttft_ms: float
    total_ms: float
    slo_met: bool
    escalations: int


def score_answer(
    tier_header: str | None, text: str, row: OutcomeRow, tier_models: Mapping[str, str]
) -> tuple[str | None, float]:
    """(tier that answered, recorded score of its model). The header decides; without a usable one
    the answer text is matched against the recorded answers (cheapest tier first); no match scores 0."""
    if tier_header is not None and tier_header in tier_models:
        model = tier_models[tier_header]
        return tier_header, row.scores.get(model, 0.0)
    for tier, model in tier_models.items():
        if row.responses.get(model) == text:
            return tier, row.scores.get(model, 0.0)
    return None, 0.0


def slo_met(
    latency_class: str, ttft_ms: float, total_ms: float, header: str | None, budgets: Mapping[str, float]
) -> bool:
    """The gateway's verdict when it gives one, else total time within the class budget."""
    if header in ("met", "missed"):
        return header == "met"
    del ttft_ms  # the default budgets are total-time budgets; TTFT is reported, not judged
    return total_ms <= budgets[latency_class]


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported value was observed)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100.0 * len(ordered)) - 1))]


def summarize(results: Sequence[Observed]) -> dict[str, Any]:
    """Absolute numbers of one run: mean quality, total cost, SLO share, escalation share, TTFT."""
    n = len(results)
    if n == 0:
        return {"requests": 0, "errors": 0, "quality": 0.0, "cost_usd": 0.0, "slo_attainment": 0.0,
                "escalation_rate": 0.0, "p50_ttft_ms": 0.0, "p99_ttft_ms": 0.0, "errors_by_status": {},
                "tier_share": {}}  # fmt: skip
    ok = [r for r in results if r.ok]
    ttfts = [r.ttft_ms for r in ok]
    return {
        "requests": n,
        "errors": n - len(ok),
        "quality": sum(r.score for r in results) / n,
        "cost_usd": sum(r.cost_usd for r in results),
        "slo_attainment": sum(r.slo_met for r in results) / n,
        "escalation_rate": sum(r.escalations > 0 for r in results) / n,
        "p50_ttft_ms": _percentile(ttfts, 50),
        "p99_ttft_ms": _percentile(ttfts, 99),
        # Which statuses failed and where answers came from: the first things to ask of a run.
        "errors_by_status": dict(sorted(Counter(str(r.status) for r in results if not r.ok).items())),
        "tier_share": {t: c / n for t, c in sorted(Counter(r.tier for r in ok if r.tier).items())},
    }


def compare(runs: Mapping[str, Sequence[Observed]]) -> dict[str, Any]:
    """The report: the policy's metrics at top level, each baseline's under `baselines`; quality
    and cost as ratios to always_large's (so always_large's are 1.0 by construction)."""
    if "always_large" not in runs:
        raise ValueError("compare needs the always_large run as the reference")
    sums = {name: summarize(results) for name, results in runs.items()}
    ref = sums["always_large"]

    def ratios(s: dict[str, Any]) -> dict[str, Any]:
        return {
            "quality_ratio": s["quality"] / ref["quality"] if ref["quality"] > 0 else 0.0,
            "cost_ratio": s["cost_usd"] / ref["cost_usd"] if ref["cost_usd"] > 0 else 0.0,
            **{k: v for k, v in s.items()},
        }

    report: dict[str, Any] = ratios(sums["policy"]) if "policy" in sums else {}
    report["baselines"] = {name: ratios(sums[name]) for name in BASELINES if name in sums}
    return report


def render_table(report: Mapping[str, Any]) -> str:
    """The report as an aligned table, one row per run."""
    columns = ("quality_ratio", "cost_ratio", "slo_attainment", "escalation_rate", "p50_ttft_ms", "p99_ttft_ms")
    rows = [("policy (auto)", report)] + [(k, v) for k, v in report["baselines"].items()]
    head = f"{'run':<16}" + "".join(f"{c:>17}" for c in columns) + f"{'requests':>10}{'errors':>8}"
    lines = [head, "-" * len(head)]
    for name, m in rows:
        cells = "".join(
            f"{m[c]:>17.3f}" if "ratio" in c or "attain" in c or "rate" in c else f"{m[c]:>17.1f}" for c in columns
        )
        lines.append(f"{name:<16}{cells}{int(m['requests']):>10}{int(m['errors']):>8}")
    if "offline_quality_ratio" in report:
        lines.append(
            f"{'policy offline':<16}{report['offline_quality_ratio']:>17.3f}{report['offline_cost_ratio']:>17.3f}"
            f"{'':>17}{report['offline_escalation_rate']:>17.3f}   (same policy and arrivals, no serving)"
        )
    return "\n".join(lines)


def plot_quality_cost(report: Mapping[str, Any], path: Path) -> None:
    """Quality vs cost (both relative to always_large) for the policy and the baselines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReplayError("--plot needs matplotlib: install the project's 'plot' extra") from None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, m in report["baselines"].items():
        ax.scatter(m["cost_ratio"], m["quality_ratio"], marker="o", color="grey")
        ax.annotate(name, (m["cost_ratio"], m["quality_ratio"]), textcoords="offset points", xytext=(5, 4))
    ax.scatter(report["cost_ratio"], report["quality_ratio"], marker="*", s=160, color="tab:red")
    ax.annotate("policy (auto)", (report["cost_ratio"], report["quality_ratio"]), textcoords="offset points",
                xytext=(5, -12))  # fmt: skip
    ax.set_xlabel("cost relative to always_large")
    ax.set_ylabel("quality relative to always_large")
    ax.set_title("tiergate replay: quality vs cost")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- prompts from the tables
