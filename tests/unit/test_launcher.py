"""The launcher's pure parts and its process plumbing (no Ray started here)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from deployments.launcher import (
    LaunchError,
    LaunchOptions,
    access_line,
    curl_example,
    effective_profile,
    profile_yaml,
)
from deployments.processes import AlreadyRunningError, InstanceLock, port_in_use, stop_processes
from deployments.profile import load_profile, parse_profile


def test_moving_the_serve_port_moves_every_loopback_tier_endpoint() -> None:
    profile = effective_profile(load_profile("local-cpu", apply_env=False), LaunchOptions(serve_port=18123))
    assert profile.ray_serve_http_port == 18123
    assert {t.endpoint for t in profile.tiers} == {"http://127.0.0.1:18123/v1"}


def test_remote_endpoints_keep_their_port_when_serve_moves() -> None:
    base = parse_profile(
        {
            "tiers": [
                {"name": "local", "endpoint": "http://127.0.0.1:8100/v1", "upstream_model": "a"},
                {"name": "remote", "endpoint": "http://models.internal:8100/v1", "upstream_model": "b"},
            ]
        }
    )
    profile = effective_profile(base, LaunchOptions(serve_port=9100))
    assert [t.endpoint for t in profile.tiers] == [
        "http://127.0.0.1:9100/v1",
        "http://models.internal:8100/v1",
    ]


def test_gateway_overrides_apply_and_a_port_clash_is_refused() -> None:
    base = load_profile("local-cpu", apply_env=False)
    profile = effective_profile(base, LaunchOptions(gateway_port=18001, gateway_host="127.0.0.2"))
    assert (profile.gateway.host, profile.gateway.port) == ("127.0.0.2", 18001)
    with pytest.raises(LaunchError, match="must differ"):
        effective_profile(base, LaunchOptions(gateway_port=18005, serve_port=18005))


def test_written_profile_round_trips_with_its_keys(tmp_path: Path) -> None:
    base = parse_profile(
        {
            "tiers": [{"name": "a", "endpoint": "http://127.0.0.1:8100/v1", "upstream_model": "a"}],
            "gateway": {"api_keys": ["k-123456789"]},
        }
    )
    again = parse_profile(yaml.safe_load(profile_yaml(base)))
    assert [k.get_secret_value() for k in again.gateway.api_keys] == ["k-123456789"]
    assert again.tiers == base.tiers


def test_local_profile_says_loopback_and_no_key_and_gives_a_keyless_curl() -> None:
    profile = load_profile("local-cpu", apply_env=False)
    assert "loopback only" in access_line(profile)
    assert "no API key" in access_line(profile)
    assert "Authorization" not in curl_example(profile)
    assert f":{profile.gateway.port}/v1/chat/completions" in curl_example(profile)


def test_a_second_lock_holder_is_told_who_runs(tmp_path: Path) -> None:
    first = InstanceLock(tmp_path)
    first.acquire()
    try:
        holder = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from deployments.processes import InstanceLock;"
                f"InstanceLock(Path({str(tmp_path)!r})).acquire()",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert holder.returncode != 0
        assert "already running" in holder.stderr
        with pytest.raises(AlreadyRunningError):
            InstanceLock(tmp_path).acquire()
    finally:
        first.release()
    again = InstanceLock(tmp_path)
    again.acquire()  # free again once released
    again.release()


def test_lock_of_a_dead_holder_is_free(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path; from deployments.processes import InstanceLock;"
        f"InstanceLock(Path({str(tmp_path)!r})).acquire(); import os; os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    lock = InstanceLock(tmp_path)
    lock.acquire()
    lock.release()


def test_port_in_use_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_in_use("127.0.0.1", sock.getsockname()[1])


_IGNORES_SIGTERM = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)\n"
)


def test_stop_processes_kills_what_ignores_sigterm() -> None:
    with subprocess.Popen([sys.executable, "-c", _IGNORES_SIGTERM], stdout=subprocess.PIPE) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == b"up\n"
        started = time.monotonic()
        proc = psutil.Process(child.pid)
        left = stop_processes([proc], grace_s=0.5)  # reaps it, so Popen.wait learns nothing
        assert not proc.is_running()
    assert left == []
    assert time.monotonic() - started < 5
