"""Reading outcome tables (JSONL) from disk: the one module of `router.offline` that reads files.

Kept apart from the rest of `router.offline` so training and evaluation stay pure and testable on
in-memory rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from router.offline.outcomes import OutcomeRow, parse_row


def _jsonl_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix == ".jsonl")
    return [path]


def load_outcomes(paths: Iterable[str | Path]) -> list[OutcomeRow]:
    """All rows of the given JSONL files (a directory means every *.jsonl inside it)."""
    rows: list[OutcomeRow] = []
    for given in paths:
        for file in _jsonl_files(Path(given)):
            with file.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        rows.append(parse_row(json.loads(line)))
                    except (json.JSONDecodeError, ValueError) as err:
                        raise ValueError(f"{file.name}:{number}: {err}") from None
    return rows
