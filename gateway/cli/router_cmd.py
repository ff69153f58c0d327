"""`tiergate router train | eval | calibrate`: fit, judge and place the learned router.

Data paths are arguments (files or folders of JSONL outcome tables); nothing is read from a fixed
location. Progress goes to stderr so `eval --json` stays machine-readable on stdout.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
import yaml

from deployments.profile import ProfileError, parse_profile
from router.offline.calibrate import threshold_for_large_share, threshold_for_quality
from router.offline.fit import FeatureCache
from router.offline.outcomes import DEFAULT_LADDER, OutcomeRow, canonical_model
from router.offline.report import Evaluation, evaluate
from router.offline.tables import load_outcomes
from router.offline.train import train_router
from router.runtime.artifact import (
    DEFAULT_ARTIFACT,
    DEFAULT_ARTIFACT_NAME,
    ArtifactError,
    load_model,
    save_model,
)
from router.runtime.model import LearnedScorer, RouterModel, positive_proba

EVAL_KEYS = (
    "apgr",
    "cpt50",
    "cpt80",
    "random_apgr",
    "oracle_apgr",
    "cascade_quality_ratio",
    "cascade_cost_ratio",
)


DataOpt = Annotated[list[Path], typer.Option("--data", help="Outcome JSONL file or folder; repeatable.")]
ModelOpt = Annotated[Path | None, typer.Option("--model", help="Artifact (default: the committed one).")]


def _progress(message: str) -> None:
    typer.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=True)


def _rows(paths: list[Path]) -> list[OutcomeRow]:
    try:
        rows = load_outcomes(paths)
    except (OSError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if not rows:
        typer.echo("error: no rows in the given data", err=True)
        raise typer.Exit(2)
    _progress(f"loaded {len(rows)} rows from {len(paths)} path(s)")
    return rows


def _model(path: Path | None) -> RouterModel:
    try:
        return load_model(path)
    except ArtifactError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


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
        out: Annotated[Path, typer.Option(help="Artifact path (.skops); a .json sidecar goes beside it.")] = (
            DEFAULT_ARTIFACT
        ),
        rung: Annotated[list[str] | None, typer.Option(help="Ladder rung key, cheapest first; repeatable.")] = None,
        target_quality: Annotated[
            float, typer.Option(help="Cascade operating point: quality / always-large to reach.")
        ] = 0.95,
        max_cost: Annotated[float, typer.Option(help="Cascade operating point: cost / always-large allowed.")] = 0.50,
        folds: Annotated[int, typer.Option(min=2, help="Group k-fold splits for out-of-fold metrics.")] = 5,
    ) -> None:
        """Fit scorer + verifier on DATA and save a versioned skops artifact."""
        rows = _rows(data)
        rungs = [canonical_model(r) for r in (rung or DEFAULT_LADDER)]
        try:
            model = train_router(
                rows,
                rungs,
                target_quality_ratio=target_quality,
                max_cost_ratio=max_cost,
                folds=folds,
                progress=_progress,
            )
            save_model(model, out)
        except (ValueError, ArtifactError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        _progress(f"wrote {out} ({out.stat().st_size} bytes), version {model.version}")
        typer.echo(json.dumps(model.metadata.get("metrics", {}), indent=2))

    @group.command("eval")
    def eval_(
        data: DataOpt,
        small: Annotated[str, typer.Option(help="Small model key (the sweep's cheap end).")],
        large: Annotated[str, typer.Option(help="Large model key (the sweep's expensive end).")],
        mid: Annotated[str | None, typer.Option(help="Middle rung for the cascade ladder.")] = None,
        model_path: ModelOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
        plot: Annotated[Path | None, typer.Option(help="Write a quality-vs-cost PNG here.")] = None,
    ) -> None:
        """Judge the router on DATA: APGR/CPT sweep between SMALL and LARGE, cascade at its stored point."""
        model = _model(model_path)
        rows = _rows(data)
        middle = canonical_model(mid) if mid else None
        try:
            evaluation = evaluate(model, rows, canonical_model(small), canonical_model(large), middle)
        except (ValueError, KeyError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
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
        profile: Annotated[Path, typer.Option(help="Profile YAML to update in place.")],
        target_large_share: Annotated[
            float | None, typer.Option(help="Share of requests the top tier should take.")
        ] = None,
        target_quality: Annotated[
            float | None, typer.Option(help="Quality / always-top to keep, at the cheapest threshold.")
        ] = None,
        model_path: ModelOpt = None,
    ) -> None:
        """Choose routing thresholds on DATA and write them (policy: learned) into PROFILE."""
        if (target_large_share is None) == (target_quality is None):
            typer.echo("error: give exactly one of --target-large-share and --target-quality", err=True)
            raise typer.Exit(2)
        model = _model(model_path)
        rungs = _profile_rungs(profile, model)
        rows = [r for r in _rows(data) if r.has(rungs if target_quality is not None else rungs[:1])]
        if not rows:
            typer.echo("error: no row has scores for the profile's rungs", err=True)
            raise typer.Exit(2)
        scores = _tier_scores(model, rungs, rows)
        if target_large_share is not None:
            t = threshold_for_large_share(scores, target_large_share)
        else:
            quality = np.asarray([[r.scores[m] for m in rungs] for r in rows], dtype=np.float64)
            t = threshold_for_quality(scores, quality, float(target_quality or 0.0))
        artifact = str(model_path) if model_path is not None else DEFAULT_ARTIFACT_NAME
        try:
            _write_profile(profile, [t] * (len(rungs) - 1), artifact)
        except ProfileError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        _progress(f"threshold {t:.4f} on {len(rows)} rows written to {profile}")

    app.add_typer(group, name="router")


def _profile_rungs(profile: Path, model: RouterModel) -> list[str]:
    """The ladder key each tier of the profile stands for (its `router_rung`)."""
    try:
        tiers = parse_profile(yaml.safe_load(profile.read_text(encoding="utf-8")), profile.name).tiers
    except (OSError, ProfileError, yaml.YAMLError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    rungs = [canonical_model(t.router_rung) if t.router_rung else "" for t in tiers]
    if len(tiers) < 2 or not all(rungs):
        typer.echo("error: calibration needs two or more tiers, each with a router_rung", err=True)
        raise typer.Exit(2)
    try:
        LearnedScorer(model, rungs)
    except KeyError as err:
        typer.echo(f"error: {err.args[0]}", err=True)
        raise typer.Exit(2) from None
    return rungs


def _tier_scores(model: RouterModel, rungs: list[str], rows: list[OutcomeRow]) -> np.ndarray[Any, Any]:
    """(rows, tiers-1) matrix of P(tier's rung is not good enough), as the policy would see it."""
    cache = FeatureCache(rows)
    top = len(model.ladder) - 1
    cols = []
    for rung in rungs[:-1]:
        k = model.rung_index(rung)
        cols.append(np.zeros(len(rows)) if k == top else positive_proba(model.scorers[k], cache.prompt))
    return np.column_stack(cols)
