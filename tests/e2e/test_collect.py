"""`tiergate router collect` against a real gateway over fake tiers: a sample `router calibrate` reads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gateway.cli import app
from gateway.collect import CollectError, exact_match, read_prompts
from router.offline.outcomes import parse_row, to_rungs
from tests.procs import fake_upstream, free_port, gateway_process, write_profile

runner = CliRunner()
TIERS = ["--tier", "small", "--tier", "medium", "--tier", "large"]
PRICES = {"small": 0.2, "medium": 1.0, "large": 6.0}  # USD per million tokens, prompt and output


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def priced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One fake behind the three test-fake tiers, each with a token price of its own."""
    with fake_upstream() as fake:
        path = tmp_path_factory.mktemp("collect") / "profile.yaml"
        data = write_profile(path, "test-fake", endpoints={"small": fake, "medium": fake, "large": fake})
        for tier, usd in zip(data["tiers"], PRICES.values(), strict=True):
            tier["price_per_million_prompt_tokens_usd"] = tier["price_per_million_output_tokens_usd"] = usd
        path.write_text(yaml.safe_dump(data))
        with gateway_process(path) as (base, _):
            yield base


def test_every_tier_answers_every_prompt_with_logprobs_cost_and_labels(priced: str, tmp_path: Path) -> None:
    prompts = _write(
        tmp_path / "prompts.jsonl",
        [
            # The fake tiers all answer "The capital of France is Paris..." (cut to --max-tokens 6).
            {"id": "right", "prompt": "Capital of France?", "answer": "The capital of France is Paris"},
            {"id": "wrong", "prompt": "Capital of France?", "answer": "Lyon"},
            {
                "id": "judged",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            },
            {"id": "mine", "prompt": "Anything", "scores": {"small": 0.5}},
        ],
    )
    out = tmp_path / "sample.jsonl"
    args = ["router", "collect", "--prompts", str(prompts), *TIERS, "--out", str(out), "--max-tokens", "6"]
    result = runner.invoke(app, [*args, "--url", priced])
    assert result.exit_code == 0, result.output
    assert "2 rows without scores" not in result.output and "1 rows without scores" in result.output
    rows = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert list(rows) == ["right", "wrong", "judged", "mine"]
    assert rows["right"]["scores"] == {"small": 1.0, "medium": 1.0, "large": 1.0}
    assert rows["wrong"]["scores"] == {"small": 0.0, "medium": 0.0, "large": 0.0}
    assert rows["judged"]["scores"] == {} and rows["judged"]["prompt"] == "Be brief.\nHi"
    assert rows["mine"]["scores"] == {"small": 0.5}
    for row in rows.values():
        assert set(row["responses"]) == {"small", "medium", "large"}
        assert row["responses"]["small"] == "The capital of France is Paris"
        assert all(len(lps) == 6 and all(lp <= 0 for lp in lps) for lps in row["logprobs"].values())
        costs = row["cost_usd"]
        assert set(costs) == set(PRICES) and costs["small"] > 0
        # Same tokens on every tier: the costs stand as the prices do.
        assert costs["large"] / costs["small"] == pytest.approx(PRICES["large"] / PRICES["small"])
    # The labelled rows are outcome rows: calibrate reads them with the tiers as model keys.
    parsed = parse_row(rows["right"])
    assert parsed.logprobs["medium"] == tuple(rows["right"]["logprobs"]["medium"])
    [keyed] = to_rungs([parsed], {"small": "small", "medium": "mid", "large": "large"})
    assert keyed.responses["mid"] == "The capital of France is Paris"
    with pytest.raises(ValueError, match="no scores"):
        parse_row(rows["judged"])


def test_a_gateway_that_is_not_there_fails_clearly(tmp_path: Path) -> None:
    prompts = _write(tmp_path / "p.jsonl", [{"prompt": "x"}])
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = runner.invoke(
        app, ["router", "collect", "--prompts", str(prompts), *TIERS, "--out", str(tmp_path / "o"), "--url", url]
    )
    assert result.exit_code != 0
    assert "no tier answered" in result.output
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_bad_prompt_lines_are_named(tmp_path: Path) -> None:
    with pytest.raises(CollectError, match="line 2: give `prompt`"):
        read_prompts(_write(tmp_path / "a.jsonl", [{"prompt": "ok"}, {"text": "no"}]))
    with pytest.raises(CollectError, match=r"line 1: .*messages"):
        read_prompts(_write(tmp_path / "b.jsonl", [{"messages": [{"role": "wizard", "content": "x"}]}]))
    (tmp_path / "c.jsonl").write_text('{"prompt": "a"}\nnot json\n', encoding="utf-8")
    with pytest.raises(CollectError, match="line 2: not JSON"):
        read_prompts(tmp_path / "c.jsonl")


@pytest.mark.parametrize(
    ("answer", "reference", "score"),
    [
        ("Let me see. The answer is (C).", "C", 1.0),
        ("Working: 6 * 7 = 42\n#### 42", "42", 1.0),
        ("The answer is B.", "C", 0.0),
    ],
)
def test_labels_compare_final_answers(answer: str, reference: str, score: float) -> None:
    assert exact_match(answer, reference) == score
