"""`tiergate up` as a real child process on free ports, with its whole process tree watched.

Shared by the integration test and the serving benchmark.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from deployments.processes import free_port, http_json

REPO = Path(__file__).resolve().parent.parent
BOOT_TIMEOUT_S = 480.0
STOP_BUDGET_S = 20.0


class StackError(RuntimeError):
    """The stack did not come up; the message ends with the launcher's log."""


@dataclass
class Stack:
    popen: subprocess.Popen[bytes]
    log_path: Path
    state_dir: Path
    gateway_port: int
    serve_port: int
    boot_s: float = 0.0
    seen: dict[int, psutil.Process] = field(default_factory=dict)
    stopped_in_s: float | None = None
    exit_code: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}/v1"

    def log_tail(self, n_chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n_chars:]

    def remember_tree(self) -> None:
        """Every process below the launcher now (Ray daemons, workers, vLLM engines, gateway)."""
        try:
            for proc in psutil.Process(self.popen.pid).children(recursive=True):
                self.seen.setdefault(proc.pid, proc)
        except psutil.NoSuchProcess:
            pass

    def stop(self) -> None:
        if self.exit_code is not None:
            return
        self.remember_tree()
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.popen.wait(timeout=STOP_BUDGET_S + 10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.exit_code = self.popen.wait()
        self.stopped_in_s = time.monotonic() - started

    def survivors(self) -> list[str]:
        alive = []
        for proc in self.seen.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{proc.pid} {proc.name()}")
            except psutil.NoSuchProcess:
                continue
        return alive


def boot(timeout_s: float = BOOT_TIMEOUT_S, profile: str = "local-cpu") -> Stack:
    """Start `tiergate up` on two free ports and wait until the gateway's /readyz says 200."""
    gateway_port, serve_port = free_port(), free_port()
    while serve_port == gateway_port:
        serve_port = free_port()
    state_dir = Path(tempfile.mkdtemp(prefix="tiergate-it-"))
    log_path = state_dir / "up.log"
    cmd = [sys.executable, "-m", "gateway.cli", "up", "--profile", profile]
    cmd += ["--port", str(gateway_port), "--serve-port", str(serve_port), "--state-dir", str(state_dir)]
    with log_path.open("wb") as log:
        popen = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    stack = Stack(popen, log_path, state_dir, gateway_port, serve_port)
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        stack.remember_tree()
        if popen.poll() is not None:
            raise StackError(f"tiergate up exited with {popen.returncode} while booting:\n{stack.log_tail()}")
        if http_json(f"http://127.0.0.1:{gateway_port}/readyz", timeout_s=2.0).status == 200:
            stack.boot_s = time.monotonic() - started
            stack.remember_tree()
            return stack
        time.sleep(1.0)
    stack.stop()
    raise StackError(f"the stack was not ready within {timeout_s:.0f} s:\n{stack.log_tail()}")
