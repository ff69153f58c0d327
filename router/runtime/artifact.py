"""Saving and loading a trained router with skops (no pickle), plus a JSON metadata sidecar.

Loading trusts an explicit list of scikit-learn and numpy types, not whatever the file names:
every type the file's schema mentions is read first (skops itself would quietly trust any
scikit-learn class), and a file that asks for any type outside the list is refused before anything
is built. The bundle's format
version is checked so a scorer never runs on features it was not trained with. This is the
module of `router/runtime` that touches files; the rest stays pure.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import skops.io as sio

from router.errors import ConfigError
from router.runtime.lexical import LexicalHead
from router.runtime.model import ARTIFACT_FORMAT_VERSION, ARTIFACT_KIND, READABLE_FORMAT_VERSIONS, RouterModel
from router.runtime.operating_point import OperatingPoint

DEFAULT_ARTIFACT = Path(__file__).resolve().parent.parent / "artifacts" / "scorer-v2.skops"

# Every type a router bundle may contain. Extend deliberately when the pipelines change.
TRUSTED_TYPES: tuple[str, ...] = (
    "builtins.slice",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.float64",
    "numpy.int64",
    "numpy.uint64",
    "numpy.random._mt19937.MT19937",
    "numpy.random._generator.Generator",
    "numpy.random._pcg64.PCG64",
    "numpy.random.bit_generator.SeedSequence",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.isotonic.IsotonicRegression",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss._loss.CyHalfSquaredError",
)


# Plain containers and scalars the schema names; they carry no code.
_PLAIN = frozenset(
    {
        "builtins.dict",
        "builtins.list",
        "builtins.str",
        "builtins.tuple",
        "builtins.int",
        "builtins.float",
        "builtins.bool",
        "builtins.NoneType",
    }
)


class ArtifactError(ConfigError):
    """An artifact that is missing, of another format version, or asks for untrusted types."""


def _schema_types(path: Path) -> set[str]:
    """Every `module.Class` the skops schema of `path` would build."""
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
    found: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__module__" in node and "__class__" in node:
                found.add(f"{node['__module__']}.{node['__class__']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found - _PLAIN


def _check_types(path: Path) -> list[str]:
    named = _schema_types(path) | set(sio.get_untrusted_types(file=path))
    untrusted = named - set(TRUSTED_TYPES)
    if untrusted:
        raise ArtifactError(f"{path.name}: refuses untrusted types {sorted(untrusted)}")
    return sorted(named)


# What a profile's `routing.scorer_artifact` says to mean the artifact shipped with tiergate.
DEFAULT_ARTIFACT_NAME = "default"


def resolve_artifact(value: str | None) -> Path:
    """A profile's `scorer_artifact` as a path: unset or "default" is the shipped artifact."""
    if value is None or value == DEFAULT_ARTIFACT_NAME:
        return DEFAULT_ARTIFACT
    return Path(value)


def metadata_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_model(model: RouterModel, path: Path) -> None:
    """Write `path` (skops) and its `.json` sidecar (metadata, for people and CI)."""
    bundle: dict[str, Any] = {
        "kind": ARTIFACT_KIND,
        "format_version": ARTIFACT_FORMAT_VERSION,
        "ladder": list(model.ladder),
        "scorers": list(model.scorers),
        "verifiers": list(model.verifiers),
        "start_thresholds": list(model.operating_point.start_thresholds),
        "verify_thresholds": list(model.operating_point.verify_thresholds),
        "start_mix": list(model.operating_point.start_mix),
        "start_per_cost": model.operating_point.start_per_cost,
        "cost_model": model.cost_model,
        "cost_reference_log_usd": model.cost_reference_log_usd,
        "metadata_json": json.dumps(model.metadata, sort_keys=True),
        "lexical_heads": [None if h is None else h.to_bundle() for h in model.lexical_heads],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # Deflate: the JSON schema of a few hundred small trees shrinks about tenfold.
    sio.dump(bundle, path, compression=zipfile.ZIP_DEFLATED, compresslevel=9)
    try:
        _check_types(path)
    except ArtifactError:
        path.unlink()
        raise
    sidecar = dict(model.metadata)
    sidecar["artifact"] = path.name
    sidecar["ladder"] = list(model.ladder)
    sidecar["operating_point"] = {
        "start_thresholds": list(model.operating_point.start_thresholds),
        "verify_thresholds": list(model.operating_point.verify_thresholds),
        "start_mix": list(model.operating_point.start_mix),
        "start_per_cost": model.operating_point.start_per_cost,
    }
    metadata_path(path).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_model(path: Path | None = None) -> RouterModel:
    """Load and check a bundle (default: the committed artifact)."""
    target = DEFAULT_ARTIFACT if path is None else Path(path)
    if not target.is_file():
        raise ArtifactError(f"no router artifact at {target.name!r}")
    try:
        bundle = sio.load(target, trusted=_check_types(target))
    except ArtifactError:
        raise
    except Exception as err:  # skops raises a variety of errors on a corrupt or foreign file
        raise ArtifactError(f"{target.name}: not a readable skops file ({type(err).__name__})") from None
    if not isinstance(bundle, dict) or bundle.get("kind") != ARTIFACT_KIND:
        raise ArtifactError(f"{target.name}: not a tiergate router artifact")
    found = bundle.get("format_version")
    if found not in READABLE_FORMAT_VERSIONS:
        raise ArtifactError(
            f"{target.name}: artifact format version {found!r}, this tiergate reads"
            f" {' and '.join(str(v) for v in READABLE_FORMAT_VERSIONS)}"
        )
    try:
        return RouterModel(
            ladder=tuple(str(m) for m in bundle["ladder"]),
            scorers=tuple(bundle["scorers"]),
            verifiers=tuple(bundle["verifiers"]),
            operating_point=OperatingPoint(
                tuple(float(t) for t in bundle["start_thresholds"]),
                tuple(float(t) for t in bundle["verify_thresholds"]),
                tuple(float(t) for t in bundle.get("start_mix", ())),
                bool(bundle.get("start_per_cost", False)),
            ),
            cost_model=bundle.get("cost_model"),
            cost_reference_log_usd=float(bundle.get("cost_reference_log_usd", 0.0)),
            metadata=dict(json.loads(str(bundle["metadata_json"]))),
            lexical_heads=tuple(
                None if h is None else LexicalHead.from_bundle(h) for h in bundle.get("lexical_heads", [])
            ),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{target.name}: incomplete router bundle ({err})") from None
