"""A bad key setting stops `tiergate serve` and `tiergate up` with one line naming it, never a traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.procs import REPO, free_port, tiergate_cmd, write_profile

BAD_ENV = [
    ({"TIERGATE_API_KEYS": "tiny1"}, "TIERGATE_API_KEYS: entry 1: a key needs at least 8 characters"),
    ({"TIERGATE_API_KEYS": "good-key-123456,sha256:abc"}, "TIERGATE_API_KEYS: entry 2: a hashed key is 'sha256:'"),
    ({"TIERGATE_API_KEYS": " , "}, "TIERGATE_API_KEYS is set but holds no key"),
    ({"TIERGATE_ADMIN_KEY": "tiny-admin"}, "TIERGATE_ADMIN_KEY: the admin key needs at least 16 characters"),
]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TIERGATE_")}
    full.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run(tiergate_cmd(*args), cwd=REPO, env=full, capture_output=True, text=True, timeout=60)


def _assert_one_line(done: subprocess.CompletedProcess[str], fragment: str, secret: str | None = None) -> None:
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, output
    assert output.count("\n") == 0, output
    assert output.startswith("error: ") and fragment in output, output
    assert "Traceback" not in output
    if secret:
        assert secret not in output


@pytest.mark.parametrize(("env", "fragment"), BAD_ENV)
def test_serve_refuses_a_bad_key_variable_in_one_line(env: dict[str, str], fragment: str) -> None:
    done = _run(["serve", "--profile", "test-fake", "--port", str(free_port())], env)
    _assert_one_line(done, fragment, secret=next(iter(env.values())).strip(" ,") or None)


def test_up_refuses_a_bad_key_variable_in_one_line_before_starting_anything(tmp_path: Path) -> None:
    done = _run(["up", "--state-dir", str(tmp_path)], {"TIERGATE_API_KEYS": "tiny1"})
    _assert_one_line(done, "TIERGATE_API_KEYS: entry 1", secret="tiny1")


@pytest.mark.parametrize(
    ("gateway", "fragment"),
    [
        ({"keys": [{"key": "sha256:" + "g" * 64}]}, "gateway.keys.0.key: a hashed key is 'sha256:'"),
        ({"admin_key": "short-admin"}, "gateway.admin_key: a key needs at least 16 characters"),
        ({"keys": [{"key": "team-key-12345", "team": "ghost"}]}, "keys.0.team names unknown team 'ghost'"),
    ],
)
def test_serve_refuses_a_bad_key_field_in_the_profile_in_one_line(
    tmp_path: Path, gateway: dict[str, object], fragment: str
) -> None:
    path = tmp_path / "profile.yaml"
    write_profile(path, "test-fake", gateway=gateway)
    done = _run(["serve", "--profile", str(path), "--port", str(free_port())], {})
    _assert_one_line(done, fragment, secret="short-admin")


def test_serve_refuses_a_rate_limit_too_small_to_split_between_workers(tmp_path: Path) -> None:
    path = tmp_path / "profile.yaml"
    write_profile(
        path, "test-fake", gateway={"api_keys": ["worker-key-1234"], "key_limits": {"requests_per_minute": 1}}
    )
    done = _run(["serve", "--profile", str(path), "--port", str(free_port()), "--workers", "2"], {})
    _assert_one_line(done, "gateway.key_limits.requests_per_minute is 1, below the 2 gateway processes")


def test_serve_refuses_to_expose_a_keyless_gateway_beyond_loopback_in_one_line() -> None:
    upstream = f"small=http://127.0.0.1:{free_port()}/v1"
    done = _run(["serve", "--upstream", upstream, "--host", "0.0.0.0", "--port", str(free_port())], {})
    _assert_one_line(done, "gateway.host is 0.0.0.0 but no API key is set")


def test_up_refuses_to_expose_a_keyless_gateway_before_starting_anything(tmp_path: Path) -> None:
    done = _run(["up", "--host", "0.0.0.0", "--state-dir", str(tmp_path)], {})
    _assert_one_line(done, "gateway.host is 0.0.0.0 but no API key is set")
    assert not (tmp_path / "up.pid").exists()  # refused before taking the instance lock
