"""A tier's calibration_file: read beside the profile, used by the priors, prices and engine limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from deployments.economics import planned, tier_economics
from deployments.planning import TierPlanningError, derive_engine_limits, load_calibration
from deployments.profile import Profile, ProfileError, TierSpec, load_profile, parse_profile
from gateway.app import create_app
from gateway.cli import app
from gateway.settings import GatewaySettings
from router.capacity.calibration import Calibration, CalibrationError
from router.capacity.memory import GIB
from router.capacity.perf import Efficiency
from router.capacity.vllm_versions import VLLM_VERSIONS
from router.runtime.slo import LatencyEstimator

ADMIN = "admin-key-0123456789"
# A slow fleet: half the default MFU and bandwidth, 3 ms a step, 100 ms before the first token
# (defaults: 0.5, 0.8, 1 ms, 18 ms), and 2 GiB more non-torch memory than vLLM 0.19's 0.25 GiB.
SLOW = Calibration(
    "slow-fleet",
    non_torch_bytes_per_gpu=VLLM_VERSIONS["0.19"].non_torch_bytes + 2 * GIB,
    comm_buffer_bytes_per_gpu=None,
    efficiency=Efficiency(0.25, 0.4, 0.003, 0.100),
    evidence=("written by the test",),
)


def _tier(**extra: Any) -> dict[str, Any]:
    return {"name": "mid", "endpoint": "http://127.0.0.1:9/v1", "upstream_model": "m", **extra}


def _profile_file(folder: Path, tier: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"name": "cal", "tiers": [tier], "gateway": {"admin_key": ADMIN}}
    path = folder / "profile.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_relative_calibration_file_is_read_beside_the_profile_wherever_the_process_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "slow.json").write_text(SLOW.to_json(), encoding="utf-8")
    path = _profile_file(tmp_path / "conf", _tier(latency_plan="llama-3.1-8b@h100-80gb", calibration_file="slow.json"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tier = load_profile(str(path), apply_env=False).tiers[0]
    assert tier.calibration_file == str((tmp_path / "conf" / "slow.json").resolve())
    assert tier_economics(tier).calibration == "slow-fleet"


def test_a_calibration_on_a_tier_the_planner_does_not_plan_is_refused() -> None:
    with pytest.raises(ProfileError, match="calibration_file needs latency_plan"):
        parse_profile({"tiers": [_tier(calibration_file="c.json")]})
    cpu = {"model_source": "stand-in", "architecture": "smollm2-135m", "kv_cache_space_gib": 1.0}
    with pytest.raises(ProfileError, match="calibration_file needs latency_plan"):
        parse_profile({"tiers": [_tier(calibration_file="c.json", serving=cpu)]})


def test_the_calibration_slows_the_prior_the_estimator_starts_from(tmp_path: Path) -> None:
    (tmp_path / "slow.json").write_text(SLOW.to_json(), encoding="utf-8")
    plain = TierSpec.model_validate(_tier(latency_plan="llama-3.1-8b@h100-80gb"))
    slow = TierSpec.model_validate(
        _tier(latency_plan="llama-3.1-8b@h100-80gb", calibration_file=str(tmp_path / "slow.json"))
    )
    a, b = tier_economics(plain), tier_economics(slow)
    assert (a.calibration, b.calibration) == (None, "slow-fleet")
    # 100 + 3 ms of fixed costs against 18 + 1; the rest is one token's prefill.
    assert b.prior.ttft_fixed_ms - a.prior.ttft_fixed_ms == pytest.approx(84.0, abs=0.5)
    # Half the MFU: twice the prefill time per prompt token (no TP, so no all-reduce term).
    assert b.prior.prefill_ms_per_token == pytest.approx(2 * a.prior.prefill_ms_per_token, rel=1e-6)
    # Half the bandwidth and 2 ms more a step: a decode step at least twice as long.
    assert b.prior.decode_ms_per_token >= 2 * a.prior.decode_ms_per_token
    # Slower decode at the same GPU price: output tokens cost more.
    assert b.output_usd_per_million > 1.9 * a.output_usd_per_million


def test_a_served_tier_sizes_its_kv_pool_with_the_calibrated_reserve(tmp_path: Path) -> None:
    (tmp_path / "slow.json").write_text(SLOW.to_json(), encoding="utf-8")
    serving = {"model_source": "x", "architecture": "llama-3.1-8b", "accelerator": "h100-80gb"}
    plain = TierSpec.model_validate(_tier(serving=serving, context_length_tokens=8192))
    slow = TierSpec.model_validate(
        _tier(serving=serving, context_length_tokens=8192, calibration_file=str(tmp_path / "slow.json"))
    )
    lost = derive_engine_limits(plain).kv_tokens_capacity - derive_engine_limits(slow).kv_tokens_capacity
    # 2 GiB more reserve at 131,072 bytes per token (Llama-3.1-8B, bf16): 16,384 tokens, give or take a block.
    assert lost == pytest.approx(2 * GIB / 131_072, abs=16)
    assert tier_economics(slow).source == "serving" and tier_economics(slow).calibration == "slow-fleet"


def test_a_missing_or_bad_calibration_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r"cannot read calibration .*nope\.json"):
        load_calibration(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"name": "x"}', encoding="utf-8")
    with pytest.raises(CalibrationError, match=r"bad\.json.*not a calibration file"):
        load_calibration(tmp_path / "bad.json")
    serving = {"model_source": "x", "architecture": "llama-3.1-8b", "accelerator": "h100-80gb"}
    tier = TierSpec.model_validate(_tier(serving=serving, calibration_file=str(tmp_path / "nope.json")))
    with pytest.raises(TierPlanningError, match="tier 'mid': calibration_file: cannot read"):
        derive_engine_limits(tier)


def test_the_gateway_refuses_to_start_on_a_missing_calibration(tmp_path: Path) -> None:
    path = _profile_file(tmp_path, _tier(latency_plan="llama-3.1-8b@h100-80gb", calibration_file="gone.json"))
    with pytest.raises(ProfileError, match=r"gone\.json"):
        create_app(GatewaySettings(profile=load_profile(str(path), apply_env=False)))


def _preview_ttft_ms(profile: Profile, prompt: str) -> tuple[float, int]:
    with TestClient(create_app(GatewaySettings(profile=profile))) as client:
        resp = client.post(
            "/admin/route-preview",
            json={"model": "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": 16},
            headers={"authorization": f"Bearer {ADMIN}"},
        )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return body["estimates"]["mid"]["ttft_ms"], body["prompt_tokens"]


def test_route_preview_estimates_from_the_calibrated_prior(tmp_path: Path) -> None:
    (tmp_path / "cal").mkdir()
    (tmp_path / "cal" / "slow.json").write_text(SLOW.to_json(), encoding="utf-8")
    plain = load_profile(str(_profile_file(tmp_path / "plain", _tier(latency_plan="llama-3.1-8b@h100-80gb"))))
    slow = load_profile(
        str(_profile_file(tmp_path / "cal", _tier(latency_plan="llama-3.1-8b@h100-80gb", calibration_file="slow.json")))
    )
    prompt = "Summarise the causes of the first world war in three sentences. " * 8
    before, tokens = _preview_ttft_ms(plain, prompt)
    after, same_tokens = _preview_ttft_ms(slow, prompt)
    assert tokens == same_tokens
    # The estimator starts from the calibrated prior: exactly what it predicts from the planner's
    # answer with the calibration read from the file, nothing else in between.
    prior = planned("llama-3.1-8b", "h100-80gb", calibration=load_calibration(tmp_path / "cal" / "slow.json"))[0]
    expected = LatencyEstimator({"mid": prior}).estimate("mid", tokens, 16).ttft_ms
    assert after == pytest.approx(expected, abs=1e-3)
    assert after - before > 80.0  # the calibration's 100 ms server overhead against the default 18 ms


def test_plan_calibration_flag_reads_with_the_same_reader_and_names_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "slow.json").write_text(SLOW.to_json(), encoding="utf-8")
    runner = CliRunner()
    base = ["plan", "--model", "llama-3.1-8b", "--gpu", "h100-80gb", "--json", "--calibration"]
    used = runner.invoke(app, [*base, str(tmp_path / "slow.json")])
    assert used.exit_code == 0, used.output
    assert '"server_overhead_s": 0.1' in used.stdout
    missing = runner.invoke(app, [*base, str(tmp_path / "gone.json")])
    assert missing.exit_code == 2 and "cannot read calibration" in missing.output and "gone.json" in missing.output


def test_an_exported_profile_keeps_the_calibration_path_as_written(tmp_path: Path) -> None:
    from deployments.profile_export import export_profile

    path = _profile_file(tmp_path, _tier(latency_plan="llama-3.1-8b@h100-80gb", calibration_file="slow.json"))
    text, _ = export_profile(str(path))
    assert "calibration_file: slow.json" in text and str(tmp_path / "slow.json") not in text
