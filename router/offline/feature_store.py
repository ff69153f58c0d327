"""A feature memo kept in a file between runs (long evaluations recompute nothing they did before).

Keys name the row and the answers a vector was built from; the file name carries a hash of the
feature names and of the feature code, so vectors from another version of the features are never
read back.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from router.offline.fit import FeatureMemo
from router.runtime import answer_features, prompt_features
from router.runtime.answer_features import VERIFIER_FEATURE_NAMES
from router.runtime.prompt_features import FEATURE_NAMES


def _file(folder: Path) -> Path:
    # The feature code itself is in the name too: a changed extraction rule (same feature names)
    # must not read back vectors it would now compute differently.
    digest = hashlib.sha256(json.dumps([FEATURE_NAMES, VERIFIER_FEATURE_NAMES]).encode())
    for module in (answer_features, prompt_features):
        digest.update(Path(str(module.__file__)).read_bytes())
    return folder / f"features-{digest.hexdigest()[:12]}.json"


def load_memo(folder: Path | None) -> FeatureMemo:
    """The memo saved under `folder` (an empty one when there is none, or no folder)."""
    if folder is None or not _file(folder).is_file():
        return FeatureMemo()
    data = json.loads(_file(folder).read_text(encoding="utf-8"))
    return FeatureMemo(dict(data.get("prompt", {})), dict(data.get("answer", {})))


def save_memo(memo: FeatureMemo, folder: Path | None) -> None:
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    tmp = _file(folder).with_suffix(".tmp")
    tmp.write_text(json.dumps({"prompt": memo.prompt, "answer": memo.answer}), encoding="utf-8")
    tmp.replace(_file(folder))
