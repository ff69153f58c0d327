"""`tiergate router train | eval | calibrate`: fit, judge and place the learned router.

Data paths are arguments (files or folders of JSONL outcome tables); nothing is read from a fixed
location. Progress goes to stderr so `eval --json` stays machine-readable on stdout.
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
)


DataOpt = Annotated[list[Path], typer.Option("--data", help="Outcome JSONL file or folder; repeatable.")]
ModelOpt = Annotated[Path | None, typer.Option("--model", help="Artifact (default: the committed one).")]


def _progress(message: str) -> None:
    typer.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=True)


def _rows(paths: list[Path]) -> list[OutcomeRow]:
    from router.offline.tables import load_outcomes

    # The table reader reports a malformed row with a plain ValueError, naming file and line.
    with errors_exit(OSError, ValueError):
        rows = load_outcomes(paths)
    if not rows:
        fail("no rows in the given data")
    _progress(f"loaded {len(rows)} rows from {len(paths)} path(s)")
    return rows


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
        rung: Annotated[list[str] | None, typer.Option(help="Ladder rung key, cheapest first; repeatable.")] = None,
        target_quality: Annotated[
            float, typer.Option(help="Cascade operating point: quality / always-large to reach.")
        ] = 0.95,
        max_cost: Annotated[float, typer.Option(help="Cascade operating point: cost / always-large allowed.")] = 0.50,
        folds: Annotated[int, typer.Option(min=2, help="Group k-fold splits for out-of-fold metrics.")] = 5,
    ) -> None:
        """Fit scorer + verifier on DATA and save a versioned skops artifact."""
        from router.offline.outcomes import DEFAULT_LADDER, canonical_model
        from router.offline.train import train_router
        from router.runtime.artifact import DEFAULT_ARTIFACT, ArtifactError, save_model

        path = DEFAULT_ARTIFACT if out is None else out
        rows = _rows(data)
        rungs = [canonical_model(r) for r in (rung or DEFAULT_LADDER)]
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
        small: Annotated[str, typer.Option(help="Small model key (the sweep's cheap end).")],
        large: Annotated[str, typer.Option(help="Large model key (the sweep's expensive end).")],
        mid: Annotated[str | None, typer.Option(help="Middle rung for the cascade ladder.")] = None,
        model_path: ModelOpt = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
        plot: Annotated[Path | None, typer.Option(help="Write a quality-vs-cost PNG here.")] = None,
    ) -> None:
        """Judge the router on DATA: APGR/CPT sweep between SMALL and LARGE, cascade at its stored point."""
        from router.offline.outcomes import canonical_model
        from router.offline.report import evaluate

        model = _model(model_path)
        rows = _rows(data)
        middle = canonical_model(mid) if mid else None
        # A ladder the model does not know is a KeyError, a ladder in the wrong order a ValueError.
        with errors_exit(ValueError, KeyError):
            evaluation = evaluate(model, rows, canonical_model(small), canonical_model(large), middle)
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
        import numpy as np

        from deployments.profile import ProfileError
        from router.offline.calibrate import threshold_for_large_share, threshold_for_quality
        from router.runtime.artifact import DEFAULT_ARTIFACT_NAME

        if (target_large_share is None) == (target_quality is None):
            fail("give exactly one of --target-large-share and --target-quality")
        model = _model(model_path)
        rungs = _profile_rungs(profile, model)
        rows = [r for r in _rows(data) if r.has(rungs if target_quality is not None else rungs[:1])]
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

    app.add_typer(group, name="router")


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

    from router.offline.fit import FeatureCache
    from router.runtime.model import positive_proba

    cache = FeatureCache(rows)
    top = len(model.ladder) - 1
    cols = []
    for rung in rungs[:-1]:
        k = model.rung_index(rung)
        cols.append(np.zeros(len(rows)) if k == top else positive_proba(model.scorers[k], cache.prompt))
    return np.column_stack(cols)
