"""Process plumbing for the local launcher: a single-instance lock, port checks, HTTP probes and
stopping a process tree within a deadline.

Only the standard library and psutil (a vLLM dependency) are used, so the launcher needs nothing
beyond what `make setup` installs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from router.errors import LaunchError


class AlreadyRunningError(LaunchError):
    """Another `tiergate up` holds the lock."""


class InstanceLock:
    """An exclusive flock on `<state_dir>/up.pid`, holding the owner's pid.

    The kernel drops a flock when its holder dies, so a crashed `up` never leaves a stale lock
    behind; the pid inside is only for the message a second `up` prints.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "up.pid"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise AlreadyRunningError(
                f"tiergate up is already running (pid {owner}, lock {self.path}); stop it with Ctrl-C"
                f" or `kill {owner}` first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port (a bind would fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now (tests use it to stay off 8000/8100)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def http_json(
    url: str, payload: dict[str, Any] | None = None, timeout_s: float = 5.0, api_key: str | None = None
) -> HttpAnswer:
    """GET (or POST `payload`) and decode JSON; status 0 means no connection."""
    data = json.dumps(payload).encode() if payload is not None else None
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - loopback URLs we build
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            raw = response.read()
            status = int(response.status)
            got = {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as err:
        raw, status, got = err.read(), err.code, {k.lower(): v for k, v in err.headers.items()}
    except (OSError, TimeoutError):
        return HttpAnswer(0, None)
    try:
        return HttpAnswer(status, json.loads(raw) if raw else None, got)
    except ValueError:
        return HttpAnswer(status, raw.decode(errors="replace"), got)


def descendants(pid: int) -> list[psutil.Process]:
    """Every live process below `pid` (children of children included)."""
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def stop_processes(procs: list[psutil.Process], grace_s: float) -> list[psutil.Process]:
    """SIGTERM, wait up to `grace_s`, then SIGKILL the rest; returns any that still live.

    psutil.Process remembers each process's start time, so a recycled pid is never signalled.
    """
    alive = [p for p in procs if _is_running(p)]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _gone, alive = psutil.wait_procs(alive, timeout=max(grace_s, 0.0))
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _gone, alive = psutil.wait_procs(alive, timeout=2.0)
    return [p for p in alive if _is_running(p)]


def _is_running(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


class Deadline:
    """A monotonic deadline for one bounded phase (shutdown must finish within 20 s)."""

    def __init__(self, budget_s: float) -> None:
        self._end_s = time.monotonic() + budget_s

    def left_s(self, cap_s: float | None = None) -> float:
        left = max(self._end_s - time.monotonic(), 0.0)
        return min(left, cap_s) if cap_s is not None else left
