"""Start tiergate commands as real processes on free loopback ports, and stop them cleanly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except urllib.error.HTTPError:
            return  # it answered, even if not 200
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def tiergate_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


class Proc:
    """A started process whose output goes to a file (a pipe nobody reads can block a server)."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="tiergate-proc-", suffix=".log", delete=False)  # noqa: SIM115
        self.popen = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self, timeout_s: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")


@contextmanager
def running(cmd: list[str], ready_url: str, env: dict[str, str] | None = None) -> Iterator[Proc]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = Proc(cmd, full_env)
    try:
        try:
            wait_http(ready_url, proc=proc.popen)
        except (RuntimeError, TimeoutError) as err:
            raise RuntimeError(f"{err}\n--- output ---\n{proc.output()[-3000:]}") from None
        yield proc
    finally:
        proc.stop()
        proc.log.close()
        Path(proc.log.name).unlink(missing_ok=True)


@contextmanager
def fake_upstream(*args: str) -> Iterator[str]:
    """A fake tier; yields its base URL (…/v1)."""
    port = free_port()
    with running(tiergate_cmd("fake-upstream", "--port", str(port), *args), f"http://127.0.0.1:{port}/health"):
        yield f"http://127.0.0.1:{port}/v1"


def write_profile(path: Path, base: str, **overrides: Any) -> dict[str, Any]:
    """Copy a shipped profile with endpoints and gateway settings replaced; returns the data."""
    data = yaml.safe_load((REPO / "deployments" / "profiles" / f"{base}.yaml").read_text())
    endpoints = overrides.pop("endpoints", {})
    for tier in data["tiers"]:
        if tier["name"] in endpoints:
            tier["endpoint"] = endpoints[tier["name"]]
    for section in ("gateway", "routing"):
        data.setdefault(section, {}).update(overrides.pop(section, {}))
    data.update(overrides)
    path.write_text(yaml.safe_dump(data))
    assert isinstance(data, dict)
    return data


@contextmanager
def gateway_process(profile_path: Path, env: dict[str, str] | None = None, *args: str) -> Iterator[tuple[str, Proc]]:
    """A gateway process serving the profile on a free port, `args` added to `tiergate serve`; yields its
    base URL (…/v1) and the process."""
    port = free_port()
    cmd = tiergate_cmd("serve", "--profile", str(profile_path), "--port", str(port), "--log-level", "warning", *args)
    with running(cmd, f"http://127.0.0.1:{port}/healthz", env=env) as proc:
        yield f"http://127.0.0.1:{port}/v1", proc


def wait_for_workers(tmpdir: Path, workers: int, timeout_s: float = 60.0) -> None:
    """Wait until `workers` gateway worker processes have built their apps.

    /healthz answers as soon as the first worker is up; on a loaded machine the second can start
    seconds later and every request would land on the first. Each worker writes its metrics files
    (named by its pid) into the serve's multiprocess folder under TMPDIR once its app exists.
    """
    deadline = time.monotonic() + timeout_s
    pids: set[str] = set()
    while time.monotonic() < deadline:
        pids = {p.stem.rsplit("_", 1)[-1] for p in tmpdir.glob("tiergate-metrics-*/*.db")}
        if len(pids) >= workers:
            time.sleep(0.2)  # the app exists; its lifespan and accept loop follow within moments
            return
        time.sleep(0.05)
    raise TimeoutError(f"{len(pids)} of {workers} gateway workers started within {timeout_s} s")


@contextmanager
def gateway(profile_path: Path, env: dict[str, str] | None = None, workers: int = 1) -> Iterator[str]:
    """A gateway process serving the profile on a free port; yields its base URL (…/v1) once every
    worker is up."""
    env = dict(env or {})
    with tempfile.TemporaryDirectory(prefix="tiergate-test-tmp-") as spool:
        env.setdefault("TMPDIR", spool)
        with gateway_process(profile_path, env, "--workers", str(workers)) as (base, _):
            if workers > 1:
                wait_for_workers(Path(env["TMPDIR"]), workers)
            yield base
