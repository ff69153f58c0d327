"""Concepts that two modules need live in one of them; the other imports it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_args

import pytest

import deployments.profile
import router.runtime.policy
from deployments.planning import architecture_for, load_architecture
from deployments.profile import ServingSpec
from router.capacity import PlanInputs
from router.capacity.architectures import CATALOGUE, ArchitectureError
from router.capacity.hardware import GPUS
from router.capacity.memory import GIB, VLLM_DEFAULT_GPU_MEMORY_UTILIZATION, VLLM_DEFAULT_MAX_NUM_SEQS
from tests.unit.capacity_configs import SMOLLM2_135M

REPO = Path(__file__).resolve().parents[2]


def test_the_profile_schema_uses_the_policys_latency_classes() -> None:
    assert deployments.profile.LatencyClass is router.runtime.policy.LatencyClass
    assert deployments.profile.LATENCY_CLASSES is router.runtime.policy.LATENCY_CLASSES
    assert get_args(router.runtime.policy.LatencyClass) == router.runtime.policy.LATENCY_CLASSES


def test_the_plan_command_and_the_profile_share_one_architecture_lookup() -> None:
    import gateway.cli.plan

    assert gateway.cli.plan.load_architecture is load_architecture
    serving = ServingSpec(model_source="x", architecture="Llama-3.3-70B")
    assert architecture_for(serving) == load_architecture("llama-3.3-70b") == CATALOGUE["llama-3.3-70b"]


def test_a_config_json_file_or_its_folder_gives_the_same_architecture(tmp_path: Path) -> None:
    config = tmp_path / "smol" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps(SMOLLM2_135M), encoding="utf-8")
    by_file, by_dir = load_architecture(str(config)), load_architecture(str(config.parent))
    assert by_file == by_dir
    assert by_file.name == "smol"


@pytest.mark.parametrize(
    ("content", "said"),
    [(None, "catalogue: "), ("[1, 2]", "not a JSON object"), ("{not json", "cannot read")],
)
def test_an_architecture_that_cannot_be_looked_up_is_an_architecture_error(
    tmp_path: Path, content: str | None, said: str
) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ArchitectureError, match=said):
        load_architecture(str(path) if content is not None else "gpt-9")


def test_vllm_defaults_are_the_planners_defaults() -> None:
    inputs = PlanInputs()
    assert inputs.gpu_memory_utilization == VLLM_DEFAULT_GPU_MEMORY_UTILIZATION == 0.9
    # None: the vLLM version's own default for the GPU, 256 below 70 GiB as everywhere else.
    assert inputs.max_num_seqs is None
    assert inputs.engine_limits(GPUS["l4"], 4096)[1] == VLLM_DEFAULT_MAX_NUM_SEQS == 256
    assert inputs.engine_limits(GPUS["h100-80gb"], 4096) == (8192, 1024)  # what vLLM 0.19 logs on an H100


def test_gib_is_defined_once_in_the_product() -> None:
    assert GIB == 2**30
    pattern = re.compile(r"^\s*GIB\s*=", re.MULTILINE)
    homes = [
        path.relative_to(REPO).as_posix()
        for package in ("gateway", "deployments", "router")
        for path in (REPO / package).rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert homes == ["router/capacity/memory.py"]
