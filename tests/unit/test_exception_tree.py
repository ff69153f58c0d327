"""Every error tiergate raises on purpose hangs under one root, on the branch router/errors.py draws."""

from __future__ import annotations

import re

import pytest

import router.errors
from deployments.app import ServeBuildError
from deployments.launcher import LaunchError as LauncherLaunchError
from deployments.model import ModelPrepareError
from deployments.planning import TierPlanningError
from deployments.processes import AlreadyRunningError
from deployments.profile import ProfileError
from router.capacity.architectures import ArchitectureError
from router.capacity.calibration import CalibrationError
from router.capacity.dtypes import DTypeError
from router.capacity.hardware import GPUError
from router.capacity.vllm_versions import VllmVersionError
from router.errors import ConfigError, LaunchError, TiergateError
from router.runtime.artifact import ArtifactError

CONFIG_LEAVES: list[type[Exception]] = [
    ArchitectureError,
    DTypeError,
    GPUError,
    VllmVersionError,
    CalibrationError,
    ArtifactError,
    ProfileError,
    TierPlanningError,
    ServeBuildError,
]
LAUNCH_LEAVES: list[type[Exception]] = [ModelPrepareError, AlreadyRunningError]


@pytest.mark.parametrize("cls", CONFIG_LEAVES)
def test_bad_input_errors_are_config_errors_and_still_value_errors(cls: type[Exception]) -> None:
    assert issubclass(cls, ConfigError)
    assert issubclass(cls, TiergateError)
    # Callers that caught ValueError before the tree existed keep working.
    assert issubclass(cls, ValueError)


@pytest.mark.parametrize("cls", LAUNCH_LEAVES)
def test_start_up_errors_are_launch_errors(cls: type[Exception]) -> None:
    assert issubclass(cls, LaunchError)
    assert issubclass(cls, TiergateError)
    assert issubclass(cls, RuntimeError)


def test_the_launcher_raises_the_trees_launch_error_itself() -> None:
    assert LauncherLaunchError is LaunchError


@pytest.mark.parametrize("cls", [*CONFIG_LEAVES, *LAUNCH_LEAVES])
def test_the_tree_drawn_in_router_errors_names_each_leaf_where_it_lives(cls: type[Exception]) -> None:
    doc = router.errors.__doc__ or ""
    assert re.search(rf"{cls.__name__}\s+{re.escape(cls.__module__)}\b", doc), cls


def test_planner_inputs_out_of_range_are_config_errors() -> None:
    from router.capacity import PlanInputs

    with pytest.raises(ConfigError, match="gpus"):
        PlanInputs(gpus=0)
