"""`tiergate up`: the whole local stack on one machine, and its orderly stop.

Order: lock -> prepare the stand-in model -> local Ray -> Serve on the profile's port (so the
gateway's :8000 stays free) -> deploy the engines -> wait until they answer -> gateway as a child
process (`python -m gateway.cli serve ...`; deployments/ never imports gateway) -> wait for its
/readyz -> print the URL -> wait for Ctrl-C / SIGTERM -> stop gateway, Serve and Ray within 20 s,
then end whatever is left of this process's tree by pid.

Nothing is installed here: a missing package is an error that points at `make setup`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import yaml
from pydantic import ValidationError

from deployments.app import ServeBuildError, build_llm_configs, llm_config_dicts, uses_stand_in
from deployments.model import cache_dir, prepare_stand_in
from deployments.processes import (
    AlreadyRunningError,
    Deadline,
    InstanceLock,
    descendants,
    http_json,
    port_in_use,
    stop_processes,
)
from deployments.profile import LOOPBACK_HOSTS, Profile, ProfileError, dump_with_secrets, load_profile
from router.errors import LaunchError as LaunchError  # re-exported: callers know it as the launcher's error

SERVE_APP_NAME = "tiergate"
SHUTDOWN_BUDGET_S = 18.0  # the promise is 20 s; keep a margin for the interpreter's own exit
# Logical CPUs for the local Ray: Ray Serve LLM asks for CPUs per replica, ingress and proxy;
# with the 2 physical cores counted as 2, the ingress replica never got scheduled.
DEFAULT_RAY_CPUS = 8
RAY_OBJECT_STORE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class LaunchOptions:
    """What `tiergate up` takes; None means "as the profile says"."""

    profile: str = "local-cpu"
    gateway_host: str | None = None
    gateway_port: int | None = None
    serve_port: int | None = None
    state_dir: Path | None = None
    ray_num_cpus: int = DEFAULT_RAY_CPUS
    start_gateway: bool = True
    ready_timeout_s: float = 600.0
    python: str = sys.executable
    verbose: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)


def _replace_port(url: str, old_port: int, new_port: int) -> str:
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK_HOSTS or parts.port != old_port:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{new_port}"))


def effective_profile(profile: Profile, opts: LaunchOptions) -> Profile:
    """The profile with the launcher's port and host overrides applied.

    Moving Ray Serve's port also moves every loopback tier endpoint that pointed at the old one.
    """
    data = profile.model_dump(mode="python")
    data["gateway"]["api_keys"] = [k.get_secret_value() for k in profile.gateway.api_keys]
    if opts.serve_port is not None and opts.serve_port != profile.ray_serve_http_port:
        for tier in data["tiers"]:
            tier["endpoint"] = _replace_port(tier["endpoint"], profile.ray_serve_http_port, opts.serve_port)
        data["ray_serve_http_port"] = opts.serve_port
    if opts.gateway_host is not None:
        data["gateway"]["host"] = opts.gateway_host
    if opts.gateway_port is not None:
        data["gateway"]["port"] = opts.gateway_port
    try:
        return Profile.model_validate(data)
    except ValidationError as err:
        raise LaunchError(f"the overrides make the profile invalid: {err}") from None


def profile_yaml(profile: Profile) -> str:
    """The profile as YAML the gateway can load (secrets written out: the file is 0600)."""
    return yaml.safe_dump(dump_with_secrets(profile, exclude_none=True), sort_keys=False)


def access_line(profile: Profile) -> str:
    """What a caller needs to know about reaching the gateway (said at start)."""
    host, port = profile.gateway.host, profile.gateway.port
    keys = "needs an API key (Authorization: Bearer ...)" if profile.gateway.has_keys else "needs no API key"
    where = "on loopback only" if host in LOOPBACK_HOSTS else f"on {host} (reachable from other machines)"
    return f"the gateway listens {where} at http://{host}:{port} and {keys}"


def curl_example(profile: Profile) -> str:
    auth = ' -H "Authorization: Bearer $TIERGATE_API_KEY"' if profile.gateway.has_keys else ""
    host = "127.0.0.1" if profile.gateway.host in {"0.0.0.0", "::"} else profile.gateway.host
    body = '{"model":"auto","messages":[{"role":"user","content":"What is the capital of France?"}]}'
    return (
        f"curl -s http://{host}:{profile.gateway.port}/v1/chat/completions{auth}"
        f" -H 'Content-Type: application/json' -d '{body}'"
    )


class _StopRequestedError(Exception):
    """Raised in the main thread by the signal handler to leave whatever it is waiting on."""


class Launcher:
    """Runs the stack in this process and its children; `run()` returns the exit code."""

    def __init__(self, opts: LaunchOptions, say: Callable[[str], None] | None = None) -> None:
        self.opts = opts
        self._t0_s = time.monotonic()
        self._say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._stopping = False
        self._ray_started = False
        self._serve_started = False
        self._gateway: subprocess.Popen[bytes] | None = None
        self._deploy_error: BaseException | None = None

    def say(self, msg: str) -> None:
        self._say(f"[{time.monotonic() - self._t0_s:5.0f} s] {msg}")

    # -- entry point ------------------------------------------------------------------------------

    def run(self) -> int:
        try:
            profile = effective_profile(load_profile(self.opts.profile), self.opts)
            profile.gateway.check_exposure()
        except (ProfileError, LaunchError) as err:
            self._say(f"error: {err}")
            return 2
        state_dir = self.opts.state_dir or cache_dir() / "run"
        lock = InstanceLock(state_dir)
        try:
            lock.acquire()
        except AlreadyRunningError as err:
            self._say(f"error: {err}")
            return 3
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            self._up(profile, state_dir)
            self._wait_until_stopped()
        except _StopRequestedError:
            pass
        # ModelPrepareError is a LaunchError; ServeBuildError a ConfigError found only now.
        except (LaunchError, ServeBuildError) as err:
            self._say(f"error: {err}")
            code = 1
        finally:
            self._stopping = True
            self._shutdown()
            lock.release()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.say(f"{signal.Signals(signum).name}: stopping the gateway, Ray Serve and Ray")
        raise _StopRequestedError

    # -- bring-up ---------------------------------------------------------------------------------

    def _up(self, profile: Profile, state_dir: Path) -> None:
        self.say(f"profile {profile.name!r}: {access_line(profile)}")
        serve_port, gw = profile.ray_serve_http_port, profile.gateway
        for what, host, port in (("Ray Serve", "127.0.0.1", serve_port), ("the gateway", gw.host, gw.port)):
            if port_in_use(host, port):
                raise LaunchError(f"port {port} for {what} is already in use on {host}")

        self._configure_env()
        stand_in = prepare_stand_in(progress=self.say) if uses_stand_in(profile) else None
        model_ids = [c["model_loading_config"]["model_id"] for c in llm_config_dicts(profile, stand_in)]
        # Ray first: its daemons start while this process imports vLLM for the configs.
        self._start_ray()
        configs = build_llm_configs(profile, stand_in)
        self._deploy(configs, serve_port, model_ids)
        self._warm_up(serve_port, model_ids[0])
        if self.opts.start_gateway:
            profile_file = state_dir / "profile.yaml"
            profile_file.write_text(profile_yaml(profile), encoding="utf-8")
            profile_file.chmod(0o600)
            self._start_gateway(profile, profile_file)
            tiers = ", ".join(t.name for t in profile.tiers)
            self.say(f"ready: http://{gw.host}:{gw.port}/v1 (tiers {tiers})")
            self.say(f"try:  {curl_example(profile)}")
        else:
            self.say(f"ready: Ray Serve at http://127.0.0.1:{serve_port}/v1 (no gateway started)")
        self.say("Ctrl-C stops everything")

    def _configure_env(self) -> None:
        # Set before vLLM and Ray are imported; Ray's processes inherit them.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from a laptop stack
        if not self.opts.verbose:
            # Keep this terminal to progress lines; every process still logs to Ray's session dir.
            os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
            logging.getLogger("ray.serve").setLevel(logging.WARNING)

    def _start_ray(self) -> None:
        try:
            import ray
        except ImportError as err:
            raise LaunchError(f"ray is not installed ({err}); run `make setup`") from None
        self.say(f"starting a local Ray ({self.opts.ray_num_cpus} logical CPUs)")
        self._ray_started = True  # set first: a half-started Ray must still be shut down
        context = ray.init(
            address="local",
            num_cpus=self.opts.ray_num_cpus,
            include_dashboard=False,
            log_to_driver=self.opts.verbose,
            object_store_memory=RAY_OBJECT_STORE_BYTES,
            namespace="tiergate",
            configure_logging=self.opts.verbose,
        )
        session_dir = context.address_info.get("session_dir") if hasattr(context, "address_info") else None
        if session_dir:
            # The terminal keeps to progress lines; Ray's, Serve's and vLLM's own lines are in here.
            self.say(f"Ray, Serve and vLLM log to {Path(session_dir) / 'logs'} (--verbose shows them here)")
        # ray.init installs its own SIGTERM handling (a C++ crash handler that re-raises the signal,
        # killing this process mid-shutdown); take the signals back so the ordered stop runs.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _deploy(self, configs: list[Any], serve_port: int, model_ids: list[str]) -> None:
        from ray import serve
        from ray.serve.llm import build_openai_app

        if not self.opts.verbose:
            logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve sets INFO on import
        self._serve_started = True
        serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
        app = build_openai_app({"llm_configs": configs})
        self.say(f"deploying {len(configs)} vLLM engine(s) {model_ids} on Ray Serve :{serve_port} (1-2 min)")

        def deploy() -> None:
            try:
                serve.run(app, name=SERVE_APP_NAME, route_prefix="/")
            except BaseException as err:  # reported by the waiting thread
                self._deploy_error = err

        worker = threading.Thread(target=deploy, name="serve-deploy", daemon=True)
        worker.start()
        deadline = Deadline(self.opts.ready_timeout_s)
        next_report_s = time.monotonic() + 10.0
        while worker.is_alive():
            worker.join(timeout=1.0)
            if deadline.left_s() == 0.0:
                raise LaunchError(f"Ray Serve was not ready after {self.opts.ready_timeout_s:.0f} s")
            if time.monotonic() >= next_report_s:
                next_report_s += 10.0
                self.say(f"waiting for the engines: {self._serve_status()}")
        if self._deploy_error is not None:
            raise LaunchError(f"deploying on Ray Serve failed: {self._deploy_error}")
        url = f"http://127.0.0.1:{serve_port}/v1/models"
        while True:
            answer = http_json(url)
            listed = (answer.body or {}).get("data", []) if answer.status == 200 else []
            served = {m.get("id") for m in listed}
            if set(model_ids) <= served:
                break
            if deadline.left_s() == 0.0:
                raise LaunchError(f"{url} does not list {model_ids} (status {answer.status})")
            time.sleep(1.0)
        self.say(f"Ray Serve is up: {sorted(served)}")

    def _serve_status(self) -> str:
        from ray import serve

        try:
            app = serve.status().applications.get(SERVE_APP_NAME)
        except Exception:  # status is best effort while the controller starts
            return "starting Serve"
        if app is None:
            return "no application yet"
        parts = [f"{name.split(':')[0]} {d.status.value}" for name, d in app.deployments.items()]
        return f"{app.status.value} ({', '.join(parts)})"

    def _warm_up(self, serve_port: int, model_id: str) -> None:
        payload = {"model": model_id, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        started_s = time.monotonic()
        answer = http_json(f"http://127.0.0.1:{serve_port}/v1/chat/completions", payload, timeout_s=120.0)
        if answer.status != 200:
            raise LaunchError(f"the first request to {model_id!r} failed: {answer.status} {answer.body}")
        self.say(f"first answer from {model_id!r} in {time.monotonic() - started_s:.1f} s")

    def _start_gateway(self, profile: Profile, profile_file: Path) -> None:
        gw = profile.gateway
        cmd = [self.opts.python, "-m", "gateway.cli", "serve", "--profile", str(profile_file)]
        cmd += ["--host", gw.host, "--port", str(gw.port)]
        self.say(f"starting the gateway on {gw.host}:{gw.port}")
        # Its own session: a terminal's Ctrl-C reaches only us, and we stop it in order.
        env = {**os.environ, **self.opts.extra_env}
        self._gateway = subprocess.Popen(cmd, start_new_session=True, env=env)
        host = "127.0.0.1" if gw.host in {"0.0.0.0", "::"} else gw.host
        url = f"http://{host}:{gw.port}/readyz"
        deadline = Deadline(60.0)
        while True:
            code = self._gateway.poll()
            if code is not None:
                raise LaunchError(f"the gateway exited with status {code} before it was ready")
            if http_json(url, timeout_s=2.0).status == 200:
                return
            if deadline.left_s() == 0.0:
                raise LaunchError(f"the gateway's {url} did not answer 200 within 60 s")
            time.sleep(0.5)

    def _wait_until_stopped(self) -> None:
        while True:
            if self._gateway is not None and self._gateway.poll() is not None:
                raise LaunchError(f"the gateway exited with status {self._gateway.returncode}")
            time.sleep(1.0)

    # -- shutdown ---------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        deadline = Deadline(SHUTDOWN_BUDGET_S)
        tree = descendants(os.getpid())  # before Ray goes: orphans it leaves are still on this list
        if self._gateway is not None and self._gateway.poll() is None:
            self.say("stopping the gateway")
            gateway_tree = [psutil.Process(self._gateway.pid), *descendants(self._gateway.pid)]
            stop_processes(gateway_tree, grace_s=deadline.left_s(4.0))
        if self._serve_started:
            self.say("stopping Ray Serve")
            _bounded(_serve_shutdown, deadline.left_s(6.0))
        if self._ray_started:
            self.say("stopping Ray")
            _bounded(_ray_shutdown, deadline.left_s(4.0))
        leftovers = stop_processes(tree + descendants(os.getpid()), grace_s=deadline.left_s(2.0))
        if leftovers:
            self.say(f"warning: could not stop pids {[p.pid for p in leftovers]}")
        if self._ray_started or self._gateway is not None:
            self.say("stopped")


def _serve_shutdown() -> None:
    from ray import serve

    serve.shutdown()  # type: ignore[no-untyped-call]


def _ray_shutdown() -> None:
    import ray

    ray.shutdown()


def _bounded(fn: Callable[[], None], timeout_s: float) -> None:
    """Run `fn` in a daemon thread and stop waiting after `timeout_s`; the caller kills what remains."""
    worker = threading.Thread(target=lambda: _quietly(fn), daemon=True)
    worker.start()
    worker.join(timeout=max(timeout_s, 0.1))


def _quietly(fn: Callable[[], None]) -> None:
    with contextlib.suppress(Exception):
        fn()


def run_up(opts: LaunchOptions) -> int:
    """Bring the stack up, block until a signal, stop it; returns the process exit code."""
    return Launcher(opts).run()
