"""docs/reliability.md names real tests: every `file::test` it cites exists, and every promise has
tests or says it is in progress."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_cited_test_exists() -> None:
    cited = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", DOC.read_text())
    assert cited
    for file, name in cited:
        path = REPO / file
        assert path.is_file(), file
        if name:
            assert name in _test_names(path), f"{file}::{name}"


def test_every_promise_has_tests_or_says_it_is_in_progress() -> None:
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) >= 15
    for row in rows:
        promise, status, proof = (cell.strip() for cell in row.strip("|").split(" | ", 2))
        assert "tests/" in proof or status.startswith("in progress"), promise
