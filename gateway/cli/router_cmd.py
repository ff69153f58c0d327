"""`tiergate router train | eval | calibrate | lobo | collect`: fit, judge, place and stress the learned router,
and collect a sample of your own tiers' answers to calibrate it on.

Data paths are arguments (files or folders of JSONL outcome tables); nothing is read from a fixed
location. `--small/--mid/--large` name whichever model keys of the tables stand on those rungs:
the artifact knows rungs only. Progress goes to stderr so `--json` output stays machine-readable.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway.cli.common import errors_exit, fail

if TYPE_CHECKING:
    # numpy, scikit-learn and skops cost seconds to import: the commands load them when they run.
    import numpy as np

    from router.offline.outcomes import OutcomeRow
    from router.offline.report import Evaluation
    from router.runtime.model import RouterModel

EVAL_KEYS = (
    "apgr",
    "cpt50",
    "cpt80",
    "random_apgr",
    "oracle_apgr",
    "cascade_quality_ratio",
    "cascade_cost_ratio",
    "best_mix_cost_ratio",
    "cost_vs_best_mix",
)


DataOpt = Annotated[list[Path], typer.Option("--data", help="Outcome JSONL file or folder; repeatable.")]
ModelOpt = Annotated[Path | None, typer.Option("--artifact", "--model", help="Artifact (default: the committed one).")]
SmallOpt = Annotated[str, typer.Option(help="Model key of the tables standing on the cheapest rung.")]
MidOpt = Annotated[
    str | None, typer.Option(help="Model key on the middle rung; `none` (or leaving it out of `eval`) for two rungs.")
]
LargeOpt = Annotated[str, typer.Option(help="Model key on the top rung.")]
PriceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--price",
        help="MODEL=USD per million tokens (prompt + answer, characters / 4), for rows whose table records"
        " no cost for MODEL; repeatable.",
    ),
]
_SMALL, _MID, _LARGE = "mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview"


def _ladder_models(rows: list[OutcomeRow], small: str, mid: str | None, large: str) -> list[str]:
    """The model keys of the ladder, cheapest first; each must have scores in the data."""
    from router.offline.outcomes import canonical_model, models_present

    if mid is not None and mid.lower() == "none":
        mid = None
    models = [canonical_model(m) for m in ([small, mid, large] if mid else [small, large])]
    if len(set(models)) != len(models):
        fail(f"the ladder {models} names a model twice (for a two-rung ladder give --mid none)")
    present = models_present(rows)
    missing = [m for m in models if m not in present]
    if missing:
        fail(f"no scores for {missing} in the data; it has {sorted(present)}")
    return models


def _progress(message: str) -> None:
    typer.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=True)


def _prices(given: list[str] | None) -> dict[str, float]:
    prices: dict[str, float] = {}
    for item in given or []:
        model, _, usd = item.rpartition("=")
        try:
            value = float(usd)
        except ValueError:
            value = -1.0
        if not model or not value > 0:
            fail(f"--price wants MODEL=USD_PER_MILLION_TOKENS with a positive price, got {item!r}")
        prices[model] = value
    return prices


def _rows(paths: list[Path], price: list[str] | None = None) -> list[OutcomeRow]:
    from router.offline.costs import price_by_tokens
    from router.offline.tables import load_outcomes

    prices = _prices(price)
    # The table reader reports a malformed row with a plain ValueError, naming file and line.
    with errors_exit(OSError, ValueError):
        rows = load_outcomes(paths)
    if not rows:
        fail("no rows in the given data")
    _progress(f"loaded {len(rows)} rows from {len(paths)} path(s)")
    return price_by_tokens(rows, prices) if prices else rows


def _model(path: Path | None) -> RouterModel:
    from router.runtime.artifact import ArtifactError, load_model

    # ArtifactError is named until it derives from ConfigError.
    with errors_exit(ArtifactError):
        return load_model(path)


def _plot(evaluation: Evaluation, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    curve, oracle = evaluation.router_curve, evaluation.oracle_curve
    if curve is not None and oracle is not None:
        ax.plot(curve.share, curve.quality, label="router (pre-routing)")
        ax.plot(oracle.share, oracle.quality, label="oracle", linestyle="--")
        ax.plot([0, 1], [curve.small_quality, curve.large_quality], label="random", linestyle=":")
        large = curve.large_quality
        if evaluation.cascade_points:
            xs = [c for c, _ in evaluation.cascade_points]
            ys = [q * large for _, q in evaluation.cascade_points]
            ax.plot(xs, ys, marker=".", label="routing + cascade (cost share)")
        if evaluation.cascade_result is not None:
            r = evaluation.cascade_result
            ax.scatter(
                [r.cost_ratio],
                [r.quality_ratio * large],
                color="black",
                zorder=5,
                label="cascade operating point",
            )
    ax.set_xlabel("share of requests (router) / cost share of always-large (cascade)")
    ax.set_ylabel("mean quality")
    ax.set_title(f"quality vs cost ({evaluation.summary.get('model_version', '')})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _write_profile(profile_path: Path, thresholds: list[float], artifact: str) -> None:
    import yaml

    from deployments.profile import ProfileError, parse_profile

    data: Any = yaml.safe_load(profile_path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ProfileError(f"{profile_path.name}: a profile is a YAML mapping")
    routing = dict(data.get("routing") or {})
    routing["policy"] = "learned"
    routing["thresholds"] = [round(t, 6) for t in thresholds]
    routing["scorer_artifact"] = artifact
    data["routing"] = routing
    parse_profile(data, profile_path.name)  # refuse to write a profile that would not load
    profile_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Train, evaluate and calibrate the learned router.", no_args_is_help=True)

    @group.command("train")
    def train(
        data: DataOpt,
        out: Annotated[
            Path | None,
            typer.Option(help="Artifact path (.skops; default: the committed one); a .json sidecar goes beside it."),
        ] = None,
        small: SmallOpt = _SMALL,
        mid: MidOpt = _MID,
        large: LargeOpt = _LARGE,
        price: PriceOpt = None,
        target_quality: Annotated[
            float, typer.Option(help="Cascade operating point: quality / always-large to reach.")
        ] = 0.95,
        max_cost: Annotated[
            float | None, typer.Option(help="Cascade operating point: cost / always-large allowed (none: no cap).")
        ] = None,
        folds: Annotated[int, typer.Option(min=2, help="Group k-fold splits for out-of-fold metrics.")] = 5,
    ) -> None:
        """Fit scorer + verifier on DATA and save a versioned skops artifact."""
        from router.offline.train import train_router
        from router.runtime.artifact import DEFAULT_ARTIFACT, ArtifactError, save_model

        path = DEFAULT_ARTIFACT if out is None else out
        rows = _rows(data, price)
        rungs = _ladder_models(rows, small, mid, large)
        # Training rejects an unusable table or ladder with a plain ValueError.
        with errors_exit(ArtifactError, ValueError):
            model = train_router(
                rows,
                rungs,
                target_quality_ratio=target_quality,
                max_cost_ratio=max_cost,
                folds=folds,
                progress=_progress,
            )
            save_model(model, path)
        _progress(f"wrote {path} ({path.stat().st_size} bytes), version {model.version}")
        typer.echo(json.dumps(model.metadata.get("metrics", {}), indent=2))

    @group.command("eval")
    def eval_(
        data: DataOpt,
        small: SmallOpt = _SMALL,
        large: LargeOpt = _LARGE,
        price: PriceOpt = None,
        mid: MidOpt = None,
        model_path: ModelOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
        plot: Annotated[Path | None, typer.Option(help="Write a quality-vs-cost PNG here.")] = None,
    ) -> None:
        """Judge the router on DATA: APGR/CPT sweep between SMALL and LARGE, cascade at its stored point."""
        from router.offline.report import evaluate

        model = _model(model_path)
        rows = _rows(data, price)
        models = _ladder_models(rows, small, mid, large)
        # A ladder the model does not know is a KeyError, a ladder in the wrong order a ValueError.
        with errors_exit(ValueError, KeyError):
            evaluation = evaluate(model, rows, models[0], models[-1], models[1] if mid else None)
        if plot is not None:
            _plot(evaluation, plot)
            _progress(f"wrote {plot}")
        summary = evaluation.summary
        if as_json:
            ordered = {k: summary.get(k) for k in EVAL_KEYS}
            ordered.update({k: v for k, v in summary.items() if k not in ordered})
            typer.echo(json.dumps(ordered, indent=2))
            return
        for key in EVAL_KEYS:
            typer.echo(f"{key:>24}: {summary.get(key)}")
        for bench, values in summary.get("per_benchmark", {}).items():
            typer.echo(
                f"{bench:>24}: apgr {values.get('apgr')} cpt50 {values.get('cpt50')}"
                f" cascade q {values.get('cascade_quality_ratio')} c {values.get('cascade_cost_ratio')}"
            )

    @group.command("calibrate")
    def calibrate(
        data: DataOpt,
        out: Annotated[
            Path | None,
            typer.Option(help="Write a calibrated artifact here (.skops + .json): the operating point for DATA."),
        ] = None,
        profile: Annotated[
            Path | None, typer.Option(help="Instead: write pre-router thresholds into this profile YAML.")
        ] = None,
        target_large_share: Annotated[
            float | None, typer.Option(help="(--profile) Share of requests the top tier should take.")
        ] = None,
        target_quality: Annotated[
            float | None, typer.Option(help="Quality / always-top to keep, at the cheapest point.")
        ] = None,
        small: SmallOpt = _SMALL,
        mid: MidOpt = _MID,
        large: LargeOpt = _LARGE,
        price: PriceOpt = None,
        bootstrap: Annotated[int, typer.Option(min=0, help="(--out) Resamples for the 90% interval.")] = 200,
        refit: Annotated[
            bool,
            typer.Option(help="(--out) Fit verifier heads, lexical heads and the cost model on DATA where they help."),
        ] = True,
        model_path: ModelOpt = None,
    ) -> None:
        """Place the router for DATA, a labelled sample of your traffic (same rows as the outcome tables).

        With --out: place the router for DATA and write a new artifact. With --refit, what DATA can
        teach is fitted first where cross-validation shows it helps (each rung's verifier head, a
        lexical pre-router head on the prompt's words, the top rung's cost model); then the agreement
        cascade and a pre-router are placed, and the cheaper is kept only where it beats the cheapest
        fixed mix of tiers by 10% on a sample with a real signal (else the artifact runs that mix).
        Reports expected quality and cost with an interval. With --profile: write pre-router
        thresholds into a profile.
        """
        if (out is None) == (profile is None):
            fail("give exactly one of --out and --profile")
        model = _model(model_path)
        all_rows = _rows(data, price)
        models = _ladder_models(all_rows, small, mid, large)
        if out is not None:
            if target_quality is None or target_large_share is not None:
                fail("--out calibrates to --target-quality (and not --target-large-share)")
            _calibrate_artifact(model, all_rows, models, float(target_quality), out, bootstrap, model_path, refit)
            return
        assert profile is not None
        _calibrate_profile(model, all_rows, models, profile, target_large_share, target_quality, model_path)

    @group.command("lobo")
    def lobo(
        data: DataOpt,
        small: SmallOpt = _SMALL,
        mid: MidOpt = _MID,
        large: LargeOpt = _LARGE,
        price: PriceOpt = None,
        target_quality: Annotated[float, typer.Option(help="Quality / always-top each fold calibrates to.")] = 0.95,
        calibration_share: Annotated[float, typer.Option(help="Share of a held-out benchmark to calibrate on.")] = 0.2,
        seed: Annotated[int, typer.Option(help="Seed of the calibration split and the bootstrap.")] = 7,
        refit: Annotated[
            bool,
            typer.Option(
                help="Fit verifier heads, lexical heads and the cost model on each calibration sample where they help."
            ),
        ] = True,
        benchmark: Annotated[
            list[str] | None, typer.Option(help="Only this held-out benchmark; repeatable (default: every one).")
        ] = None,
        cache: Annotated[
            Path | None, typer.Option(help="Folder keeping computed features between runs (outside the repo).")
        ] = None,
        json_out: Annotated[Path | None, typer.Option("--json-out", help="Write every fold's numbers here.")] = None,
        holdout: Annotated[
            list[Path] | None,
            typer.Option(help="Train on all of DATA and hold out each benchmark of these tables instead; repeatable."),
        ] = None,
    ) -> None:
        """Leave-one-benchmark-out on DATA: train on the others, calibrate on 20% of one, judge on its 80%."""
        from router.offline.costs import fill_costs
        from router.offline.feature_store import load_memo, save_memo
        from router.offline.lobo import FoldPlan, fold_table, leave_one_benchmark_out
        from router.offline.outcomes import to_rungs
        from router.offline.train import rung_rows

        rows = _rows(data, price)
        models = _ladder_models(rows, small, mid, large)
        keyed, rungs = rung_rows(rows, models)
        held_rows = None
        if holdout:
            # Tables without prices are priced from the training tables (router.offline.costs).
            held_rows = fill_costs(to_rungs(_rows(holdout, price), dict(zip(models, rungs, strict=True))), keyed)
        memo = load_memo(cache)
        try:
            with errors_exit(ValueError):
                folds = leave_one_benchmark_out(
                    keyed,
                    rungs,
                    memo,
                    FoldPlan(target_quality, calibration_share, seed, refit),
                    benchmarks=benchmark,
                    holdout=held_rows,
                    progress=_progress,
                )
        finally:
            save_memo(memo, cache)
        if json_out is not None:
            json_out.write_text(
                json.dumps({f.benchmark: f.summary for f in folds}, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
            _progress(f"wrote {json_out}")
        typer.echo(fold_table(folds))
        if folds and all("skipped" in f.summary for f in folds):
            fail("every fold was skipped: " + "; ".join(f"{f.benchmark}: {f.summary['skipped']}" for f in folds))

    @group.command("collect")
    def collect(
        prompts: Annotated[
            Path,
            typer.Option(
                help="JSONL, a `prompt` or `messages` per line; optional `id`, `benchmark`, `answer`, `scores`."
            ),
        ],
        tier: Annotated[
            list[str], typer.Option(help="A tier to ask, cheapest first; repeatable (give every rung of the ladder).")
        ],
        out: Annotated[Path, typer.Option(help="Write the outcome rows here (JSONL, model keys = tier names).")],
        url: Annotated[str, typer.Option(help="The gateway's OpenAI base URL.")] = "http://127.0.0.1:8000/v1",
        api_key: Annotated[
            str | None, typer.Option(envvar="TIERGATE_API_KEY", help="Bearer key, if the gateway asks for one.")
        ] = None,
        concurrency: Annotated[int, typer.Option(min=1, help="Calls in flight at once.")] = 4,
        max_tokens: Annotated[
            int | None, typer.Option(min=1, help="max_tokens of every call (default: the tier's).")
        ] = None,
    ) -> None:
        """Ask every --tier for every prompt through a running gateway: a sample for `router calibrate`.

        Each answer is kept with its token logprobs and cost. A prompt with a reference `answer` is
        labelled by exact match of final answers (option letter, number, code block, else text);
        one without gets empty `scores` for your judge to fill. Then:
        `tiergate router calibrate --data OUT --small T1 --mid T2 --large T3 --target-quality 0.95 --out X`.
        """
        import asyncio

        from gateway.collect import CollectError, CollectSettings, read_prompts
        from gateway.collect import collect as run_collect

        if len(set(tier)) != len(tier) or len(tier) < 2:
            fail("give two or more distinct --tier names, cheapest first")
        with errors_exit(OSError, CollectError):
            rows = read_prompts(prompts)
        if not rows:
            fail(f"no prompts in {prompts}")
        _progress(f"asking {len(tier)} tiers for {len(rows)} prompts through {url}")
        settings = CollectSettings(concurrency=concurrency, max_tokens=max_tokens, api_key=api_key)
        got = asyncio.run(run_collect(url, rows, tier, settings, _progress))
        if len(got.failures) == len(rows) * len(tier):
            fail(f"no tier answered ({got.failures[0]}): is the gateway up at --url?")
        with errors_exit(OSError):
            out.write_text("".join(json.dumps(r) + "\n" for r in got.rows), encoding="utf-8")
        for line in got.failures[:10]:
            _progress(f"no answer: {line}")
        unlabelled = sum(1 for r in got.rows if not r["scores"])
        unpriced = sum(len(r["responses"]) - len(r["cost_usd"]) for r in got.rows)
        _progress(
            f"wrote {len(got.rows)} rows to {out}: {len(got.failures)} calls without an answer, "
            f"{unlabelled} rows without scores (give them scores 0-1 per tier before calibrating), "
            f"{unpriced} answers without a cost (their tier has no token price in the profile)"
        )

    app.add_typer(group, name="router")


def _calibrate_artifact(
    model: RouterModel,
    rows: list[OutcomeRow],
    models: list[str],
    target_quality: float,
    out: Path,
    bootstrap: int,
    base: Path | None,
    refit: bool = True,
) -> None:
    from router.offline.calibrate import calibrate_model
    from router.runtime.artifact import ArtifactError, save_model

    # A ladder the model does not know is a KeyError, rows without costs a ValueError.
    with errors_exit(ValueError, KeyError, ArtifactError):
        calibrated, summary = calibrate_model(
            model,
            rows,
            models,
            target_quality,
            bootstrap=bootstrap,
            base=str(base or "default"),
            refit=refit,
            progress=_progress,
        )
        save_model(calibrated, out)
    _progress(f"wrote {out}, version {calibrated.version}")
    typer.echo(json.dumps(summary, indent=2))


def _calibrate_profile(
    model: RouterModel,
    all_rows: list[OutcomeRow],
    models: list[str],
    profile: Path,
    target_large_share: float | None,
    target_quality: float | None,
    model_path: Path | None,
) -> None:
    import numpy as np

    from deployments.profile import ProfileError
    from router.offline.calibrate import threshold_for_large_share, threshold_for_quality
    from router.offline.train import rung_rows
    from router.runtime.artifact import DEFAULT_ARTIFACT_NAME
    from router.runtime.model import LEGACY_RUNG_KEYS

    if (target_large_share is None) == (target_quality is None):
        fail("give exactly one of --target-large-share and --target-quality")
    rungs = [LEGACY_RUNG_KEYS.get(r, r) for r in _profile_rungs(profile, model)]
    keyed, _ = rung_rows(all_rows, models)
    rows = [r for r in keyed if r.has(rungs if target_quality is not None else rungs[:1])]
    if not rows:
        fail("no row has scores for the profile's rungs")
    scores = _tier_scores(model, rungs, rows)
    if target_large_share is not None:
        t = threshold_for_large_share(scores, target_large_share)
    else:
        quality = np.asarray([[r.scores[m] for m in rungs] for r in rows], dtype=np.float64)
        t = threshold_for_quality(scores, quality, float(target_quality or 0.0))
    artifact = str(model_path) if model_path is not None else DEFAULT_ARTIFACT_NAME
    # ProfileError is named until it derives from ConfigError.
    with errors_exit(ProfileError):
        _write_profile(profile, [t] * (len(rungs) - 1), artifact)
    _progress(f"threshold {t:.4f} on {len(rows)} rows written to {profile}")


def _profile_rungs(profile: Path, model: RouterModel) -> list[str]:
    """The ladder key each tier of the profile stands for (its `router_rung`)."""
    import yaml

    from deployments.profile import ProfileError, parse_profile
    from router.offline.outcomes import canonical_model
    from router.runtime.model import LearnedScorer

    with errors_exit(OSError, ProfileError, yaml.YAMLError):
        tiers = parse_profile(yaml.safe_load(profile.read_text(encoding="utf-8")), profile.name).tiers
    rungs = [canonical_model(t.router_rung) if t.router_rung else "" for t in tiers]
    if len(tiers) < 2 or not all(rungs):
        fail("calibration needs two or more tiers, each with a router_rung")
    # A rung the artifact was not trained for is a KeyError naming the model's ladder.
    with errors_exit(KeyError):
        LearnedScorer(model, rungs)
    return rungs


def _tier_scores(model: RouterModel, rungs: list[str], rows: list[OutcomeRow]) -> np.ndarray[Any, Any]:
    """(rows, tiers-1) matrix of P(tier's rung is not good enough), as the policy would see it."""
    import numpy as np

    from router.offline.report import prompt_scores

    return np.column_stack([prompt_scores(model, rung, rows) for rung in rungs[:-1]])
