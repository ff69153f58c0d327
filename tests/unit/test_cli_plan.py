"""`tiergate plan`: flags, table and JSON output, exit codes, errors that list the valid keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from tests.unit.capacity_configs import SMOLLM2_135M

runner = CliRunner()


def _plan_json(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["plan", *args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_json_carries_every_answer_key_with_units() -> None:
    data = _plan_json("--model", "llama-3.3-70b", "--gpu", "h100-80gb", "--dtype", "bf16")
    for key in (
        "params_total",
        "params_active",
        "weights_bytes",
        "kv_bytes_per_token",
        "kv_tokens_capacity",
        "max_batch",
        "min_gpus",
        "tensor_parallel_size",
        "fits",
        "ttft_ms_estimate",
        "decode_tokens_per_s_per_seq",
        "decode_tokens_per_s_aggregate",
        "monthly_cost_usd",
        "monthly_cost_reserved_usd",
        "usd_per_million_tokens",
        "reserve_bytes_per_gpu",
    ):
        assert key in data, key
    assert data["tensor_parallel_size"] == 4
    assert data["fits"] is True


def test_cli_reproduces_the_strategy_docs_monthly_costs() -> None:
    a10 = _plan_json("--model", "llama-2-7b", "--gpu", "a10", "--price-per-gpu-hour", "1.2", "--utilization", "0.6")
    assert a10["monthly_cost_usd"] == pytest.approx(518.4)
    a100 = _plan_json(
        "--model", "llama-2-70b", "--gpu", "a100-80gb", "--gpus", "2", "--dtype", "fp16",
        "--price-per-gpu-hour", "4", "--hours", "720", "--utilization", "0.8",
    )  # fmt: skip
    assert a100["monthly_cost_usd"] == pytest.approx(4608.0)
    assert a100["monthly_cost_reserved_usd"] == pytest.approx(5760.0)


def test_table_labels_gb_and_gib() -> None:
    result = runner.invoke(app, ["plan", "--model", "llama-2-7b", "--gpu", "a10", "--dtype", "fp16"])
    assert result.exit_code == 0, result.output
    assert "13.48 GB (12.55 GiB)" in result.stdout
    assert "kv_tokens_capacity" in result.stdout


def test_a_model_that_does_not_fit_exits_0_with_fits_false() -> None:
    data = _plan_json("--model", "llama-3.3-70b", "--gpu", "a10", "--gpus", "1")
    assert data["fits"] is False
    assert data["kv_tokens_capacity"] == 0
    assert data["usd_per_million_tokens"] is None


def test_kv_budget_gib_sets_the_pool_directly() -> None:
    data = _plan_json("--model", "smollm2-135m", "--gpu", "l4", "--kv-budget-gib", "1", "--kv-dtype", "bf16")
    assert data["kv_tokens_capacity"] == 46_592


@pytest.mark.parametrize(
    ("flags", "listed"),
    [
        (["--model", "gpt-9", "--gpu", "h200"], "llama-3.3-70b"),
        (["--model", "llama-2-7b", "--gpu", "tpu"], "h100-80gb"),
        (["--model", "llama-2-7b", "--gpu", "h200", "--dtype", "int3"], "int4"),
        (["--model", "llama-2-7b", "--gpu", "h200", "--kv-dtype", "int4"], "fp8"),
    ],
)
def test_unknown_keys_fail_with_the_valid_ones_listed(flags: list[str], listed: str) -> None:
    result = runner.invoke(app, ["plan", *flags])
    assert result.exit_code == 2
    assert listed in result.stderr
    assert "Traceback" not in result.output


def test_model_from_a_config_json_path(tmp_path: Path) -> None:
    config = tmp_path / "smol" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps(SMOLLM2_135M), encoding="utf-8")
    by_file = _plan_json("--model", str(config), "--gpu", "l4")
    by_dir = _plan_json("--model", str(config.parent), "--gpu", "l4")
    assert by_file["params_total"] == by_dir["params_total"] == 134_515_008


def test_a_broken_config_json_is_a_clean_error(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"hidden_size": 64}', encoding="utf-8")
    result = runner.invoke(app, ["plan", "--model", str(config), "--gpu", "l4"])
    assert result.exit_code == 2
    assert "config has no 'num_attention_heads'" in result.stderr


def test_context_beyond_the_model_is_capped_and_said() -> None:
    data = _plan_json("--model", "llama-2-7b", "--gpu", "h100-80gb", "--context-tokens", "100000")
    assert data["context_tokens"] == 4096
    notes = data["notes"]
    assert isinstance(notes, list)
    assert any("capped" in str(note) for note in notes)


def test_max_num_seqs_caps_the_batch_and_the_throughput() -> None:
    args = ("--model", "llama-3.1-8b", "--gpu", "h100-80gb", "--context-tokens", "1024")
    free = _plan_json(*args, "--max-num-seqs", "4096")
    capped = _plan_json(*args, "--max-num-seqs", "256")
    assert int(str(free["max_batch"])) > 256 == capped["max_batch"] == capped["max_num_seqs"]
    assert float(str(capped["decode_tokens_per_s_aggregate"])) < float(str(free["decode_tokens_per_s_aggregate"]))
    assert float(str(capped["usd_per_million_tokens"])) > float(str(free["usd_per_million_tokens"]))


def test_batch_flag_gives_decode_and_ttft_at_that_batch() -> None:
    args = ("--model", "llama-3.1-8b", "--gpu", "h100-80gb", "--context-tokens", "4096")
    one, eight = _plan_json(*args, "--batch", "1"), _plan_json(*args, "--batch", "8")
    assert (one["batch"], eight["batch"]) == (1, 8)
    assert float(str(eight["decode_tokens_per_s_per_seq"])) < float(str(one["decode_tokens_per_s_per_seq"]))
    assert float(str(eight["ttft_ms_estimate"])) > float(str(one["ttft_ms_estimate"]))


def test_vllm_version_and_engine_limits_change_the_reserve() -> None:
    args = ("--model", "llama-3.1-8b", "--gpu", "h100-80gb", "--gpus", "2", "--context-tokens", "8192")
    new, old = _plan_json(*args), _plan_json(*args, "--vllm-version", "0.6")
    assert new["vllm_version"] == "0.19" and old["vllm_version"] == "0.6"
    assert int(str(old["reserve_bytes_per_gpu"])) != int(str(new["reserve_bytes_per_gpu"]))
    few = _plan_json(*args, "--max-num-batched-tokens", "2048", "--max-num-seqs", "64")
    assert int(str(few["reserve_bytes_per_gpu"])) < int(str(new["reserve_bytes_per_gpu"]))
    bad = runner.invoke(app, ["plan", *args, "--vllm-version", "9.9"])
    assert bad.exit_code == 2 and "0.19" in bad.stderr


def test_plan_without_model_or_calibrate_is_a_usage_error() -> None:
    result = runner.invoke(app, ["plan", "--gpu", "l4"])
    assert result.exit_code == 2
    assert "--model and --gpu" in result.stderr
