"""`tiergate replay`: drive the real gateway over three replay tiers and score what comes back.

Three `tiergate fake-upstream --replay` processes answer with the recorded answers of the small,
mid and large models of an outcome table, at a capacity planner's latency for a GPU (1B / 8B / 70B
plans by default) with a finite batch and queue. A `tiergate serve` process fronts them. The same
Poisson arrivals are replayed against the routing policy (`model="auto"`) and four baselines:
always_small, always_mid, always_large (pinned `model=<tier>`) and random (a uniform tier per
arrival, drawn once so every run sees the same draw).

Scoring, the report, its table and plot are pure and live in gateway/replay_scoring.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from gateway.replay_scoring import (
    BASELINES,
    DEFAULT_BUDGETS_MS,
    DEFAULT_SLO_MIX,
    TIERS,
    Arrival,
    Observed,
    compare,
    poisson_arrivals,
    score_answer,
    slo_met,
    summarize,
)
from gateway.replay_tier import LatencyPlan, ReplayError, latency_plan, normalise_prompt, token_count
from gateway.routing import LATENCY_HEADER
from router.offline.outcomes import OutcomeRow, canonical_model
from router.offline.tables import load_outcomes

DEFAULT_PLANS: dict[str, str] = {
    "small": "llama-3.2-1b@l4",
    "mid": "llama-3.1-8b@l4",
    "large": "llama-3.3-70b@h100x4",
}


def replay_rows(paths: Sequence[str | Path], models: Sequence[str]) -> list[OutcomeRow]:
    """Rows holding an answer and a score of every model, one per normalised prompt (the first,
    as the replay tiers keep the first), in file order."""
    wanted = [canonical_model(m) for m in models]
    try:
        rows = load_outcomes(paths)
    except (OSError, ValueError) as err:
        raise ReplayError(f"cannot read the outcome tables: {err}") from None
    seen: set[str] = set()
    out: list[OutcomeRow] = []
    for row in rows:
        key = normalise_prompt(row.prompt)
        if key in seen:
            continue
        seen.add(key)
        if all(m in row.responses and m in row.scores for m in wanted):
            out.append(row)
    if not out:
        raise ReplayError(f"no row of {', '.join(map(str, paths))} holds answers and scores of all of {wanted}")
    return out


# ---------------------------------------------------------------- driving the gateway


@dataclass(frozen=True, slots=True)
class DriveSettings:
    concurrency: int = 256
    stream: bool = False
    timeout_s: float = 120.0
    budgets_ms: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_BUDGETS_MS))


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    arrival: Arrival,
    row: OutcomeRow,
    start: float,
    tier_models: Mapping[str, str],
    usd_per_token: Mapping[str, float],
    settings: DriveSettings,
    gate: asyncio.Semaphore,
) -> Observed:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": row.prompt}]}
    if settings.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    headers = {LATENCY_HEADER: arrival.latency_class, "content-type": "application/json"}
    scheduled = start + arrival.at_s
    ttft: float | None = None
    async with gate:
        try:
            async with session.post(url, data=orjson.dumps(body), headers=headers) as resp:
                if settings.stream and resp.status == 200:
                    parts: list[str] = []
                    usage: dict[str, Any] = {}
                    async for line in resp.content:
                        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                            continue
                        chunk = orjson.loads(line[6:])
                        for choice in chunk.get("choices") or []:
                            piece = (choice.get("delta") or {}).get("content")
                            if piece:
                                if ttft is None:
                                    ttft = time.perf_counter()
                                parts.append(piece)
                        usage = chunk.get("usage") or usage
                    text = "".join(parts)
                else:
                    raw = await resp.read()
                    data = orjson.loads(raw) if resp.status == 200 else {}
                    text = str(((data.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
                    usage = data.get("usage") or {}
                done = time.perf_counter()
                status, rh = resp.status, resp.headers
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError):
            done = time.perf_counter()
            total = (done - scheduled) * 1e3
            return Observed(arrival.latency_class, 0, False, None, 0.0, 0.0, total, total, False, 0)
    total_ms = (done - scheduled) * 1e3
    ttft_ms = ((ttft or done) - scheduled) * 1e3
    if status != 200:
        return Observed(arrival.latency_class, status, False, None, 0.0, 0.0, ttft_ms, total_ms, False, 0)
    tier, score = score_answer(rh.get("x-tiergate-tier"), text, row, tier_models)
    prompt_tokens = int(usage.get("prompt_tokens") or token_count(row.prompt))
    completion_tokens = int(usage.get("completion_tokens") or token_count(text))
    header_cost = rh.get("x-tiergate-cost-usd")
    if header_cost is not None:
        cost = float(header_cost)
    else:
        cost = (prompt_tokens + completion_tokens) * usd_per_token.get(tier or "", 0.0)
    met = slo_met(arrival.latency_class, ttft_ms, total_ms, rh.get("x-tiergate-slo"), settings.budgets_ms)
    escalations = int(rh.get("x-tiergate-escalations") or 0)
    return Observed(arrival.latency_class, status, True, tier, score, cost, ttft_ms, total_ms, met, escalations)


async def drive(
    base_url: str,
    run: str,
    arrivals: Sequence[Arrival],
    rows: Sequence[OutcomeRow],
    tier_models: Mapping[str, str],
    usd_per_token: Mapping[str, float],
    settings: DriveSettings,
) -> list[Observed]:
    """Send `arrivals` to the gateway at their times: model=auto for 'policy', the pinned tier for
    'always_<tier>', the arrival's drawn tier for 'random'. Returns results in arrival order."""
    url = f"{base_url}/chat/completions"
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
    gate = asyncio.Semaphore(settings.concurrency)
    connector = aiohttp.TCPConnector(limit=settings.concurrency, limit_per_host=settings.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = time.perf_counter()
        tasks = []
        for a in arrivals:
            delay = start + a.at_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            model = "auto" if run == "policy" else a.random_tier if run == "random" else run.removeprefix("always_")
            tasks.append(
                asyncio.create_task(
                    _one(session, url, model, a, rows[a.prompt], start, tier_models, usd_per_token, settings, gate)
                )
            )
        return list(await asyncio.gather(*tasks))


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Process:
    """A tiergate subcommand as a child process, its output in a temporary file (an unread pipe
    can block a server)."""

    def __init__(self, args: list[str], name: str) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"tiergate-replay-{name}-", suffix=".log", delete=False)  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_repo_root(), os.environ.get("PYTHONPATH")]))}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args], stdout=self.log, stderr=subprocess.STDOUT, env=env
        )

    def wait_ready(self, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise ReplayError(f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-2000:]}")
            try:
                # The URL is our own loopback http:// address, never caller input.
                with urllib.request.urlopen(url, timeout=1.0):  # noqa: S310
                    return
            except urllib.error.HTTPError:
                return  # it answered
            except OSError:
                time.sleep(0.1)
        raise ReplayError(f"{self.name} did not answer {url} within {timeout_s:.0f} s:\n{self.output()[-2000:]}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def _repo_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


@contextmanager
def _all_started(specs: Sequence[tuple[list[str], str, str]], timeout_s: float) -> Iterator[list[_Process]]:
    """Start every (args, name, ready URL) at once, then wait for each: the processes' imports
    overlap instead of adding up. All are stopped on the way out, whatever happened."""
    procs: list[_Process] = []
    try:
        for args, name, _ in specs:
            procs.append(_Process(args, name))
        for proc, (_, _, url) in zip(procs, specs, strict=True):
            proc.wait_ready(url, timeout_s)
        yield procs
    finally:
        for proc in procs:
            proc.stop()


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    data: Sequence[str]
    models: Mapping[str, str]  # tier -> outcome-table model key
    rate: float
    duration_s: float
    slo_mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SLO_MIX))
    plans: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PLANS))
    seed: int = 0
    max_requests: int | None = None
    max_batch: int = 8
    max_queue: int = 64
    drive: DriveSettings = field(default_factory=DriveSettings)
    startup_timeout_s: float = 60.0
    # "cascade": learned scorer + live cascade (the shipped policy); "learned": scorer alone; "rule".
    policy: str = "cascade"
    # The gateway's port (None: a free one), for a caller that scrapes its /metrics meanwhile.
    gateway_port: int | None = None


def profile_data(endpoints: Mapping[str, str], models: Mapping[str, str], plans: Mapping[str, LatencyPlan],
                 port: int, budgets_ms: Mapping[str, float], policy: str = "cascade") -> dict[str, Any]:  # fmt: skip
    """A gateway profile over the replay tiers (deployments.profile's schema)."""
    return {
        "name": "replay",
        "description": "tiergate replay: recorded answers at planned latencies.",
        "tiers": [
            {
                "name": tier,
                "endpoint": endpoints[tier],
                "upstream_model": models[tier],
                "router_rung": canonical_model(models[tier]),
                "params_billions": round(plans[tier].params_billions, 3),
                "price_per_gpu_hour_usd": plans[tier].price_per_gpu_hour_usd,
                "gpus": plans[tier].gpus,
                # The gateway prices and estimates the tier from the same plan the fake answers at.
                "latency_plan": f"{plans[tier].model}@{plans[tier].gpu}x{plans[tier].gpus}",
                # The fakes publish vLLM's running/waiting gauges; the estimator reads the tier's real load.
                "metrics_url": endpoints[tier].removesuffix("/v1") + "/metrics",
                "engine_max_num_seqs": plans[tier].max_batch,
                "price_per_million_prompt_tokens_usd": plans[tier].usd_per_token * 1e6,
                "price_per_million_output_tokens_usd": plans[tier].usd_per_token * 1e6,
                # Benchmark prompts are long (few-shot); the recorded answers must fit uncut.
                "context_length_tokens": 32768,
                "default_max_tokens": 2048,
            }
            for tier in TIERS
        ],
        "routing": {
            "latency_classes": {
                c: {"ttft_budget_ms": b, **({"stream_mode": "commit"} if c == "realtime" else {})}
                for c, b in budgets_ms.items()
            },
            **(
                {}
                if policy == "rule"
                else {
                    "policy": "learned",
                    "scorer_artifact": "default",
                    "cascade": {"enabled": policy == "cascade"},
                }
            ),
        },
        "gateway": {
            "host": "127.0.0.1",
            "port": port,
            "access_log": False,
            "log_level": "warning",
            # A full replay tier's 503 is the refusal the replay scores against its capacity; retrying it
            # or moving it to another tier would blur the comparison of the policy with the pinned baselines.
            "resilience": {"max_retries": 0, "fallback": False, "breaker_enabled": False},
        },
        "ray_serve_http_port": port + 1 if port < 65535 else port - 1,
    }


def run_replay(settings: ReplaySettings, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Start the tiers and the gateway, replay the arrivals for the policy and each baseline, and
    return `compare`'s report plus a `setup` section saying what ran."""
    models = [settings.models[t] for t in TIERS]
    rows = replay_rows(settings.data, models)
    plans = {t: latency_plan(settings.plans[t], settings.max_batch) for t in TIERS}
    arrivals = poisson_arrivals(
        len(rows), settings.rate, settings.duration_s, settings.slo_mix, settings.seed, settings.max_requests
    )
    if not arrivals:
        raise ReplayError("no arrival falls within --duration-s at this --rate; raise either")
    tier_models = {t: canonical_model(settings.models[t]) for t in TIERS}
    usd_per_token = {t: plans[t].usd_per_token for t in TIERS}
    progress(f"replay: {len(rows)} prompts, {len(arrivals)} arrivals per run, 5 runs")
    runs: dict[str, list[Observed]] = {}
    with tempfile.TemporaryDirectory(prefix="tiergate-replay-") as tmp:
        specs: list[tuple[list[str], str, str]] = []
        endpoints: dict[str, str] = {}
        for tier in TIERS:
            port = free_port()
            args = ["fake-upstream", "--port", str(port), "--model", settings.models[tier]]
            for path in settings.data:
                args += ["--replay", str(path)]
            args += ["--latency-plan", settings.plans[tier], "--max-batch", str(settings.max_batch)]
            args += ["--max-queue", str(settings.max_queue)]
            specs.append((args, f"tier-{tier}", f"http://127.0.0.1:{port}/health"))
            endpoints[tier] = f"http://127.0.0.1:{port}/v1"
            progress(f"replay: tier {tier}: {settings.models[tier]} at {settings.plans[tier]}")
        gw_port = settings.gateway_port or free_port()
        profile = Path(tmp) / "replay-profile.yaml"
        budgets = settings.drive.budgets_ms
        profile_dict = profile_data(endpoints, settings.models, plans, gw_port, budgets, settings.policy)
        profile.write_text(yaml.safe_dump(profile_dict))
        serve = ["serve", "--profile", str(profile), "--port", str(gw_port), "--log-level", "warning"]
        specs.append((serve, "gateway", f"http://127.0.0.1:{gw_port}/healthz"))
        progress("replay: starting three tiers and the gateway")
        with _all_started(specs, settings.startup_timeout_s):
            base = f"http://127.0.0.1:{gw_port}/v1"
            for run in ("policy", *BASELINES):
                t0 = time.perf_counter()
                runs[run] = asyncio.run(drive(base, run, arrivals, rows, tier_models, usd_per_token, settings.drive))
                s = summarize(runs[run])
                progress(
                    f"replay: {run:<13} {s['requests']:.0f} requests in {time.perf_counter() - t0:.1f} s,"
                    f" {s['errors']:.0f} errors, quality {s['quality']:.3f}, SLO {s['slo_attainment']:.3f}"
                )
    report = compare(runs)
    from deployments.profile import Profile
    from gateway.replay_offline import offline_ratios

    progress("replay: the same policy offline, on the same arrivals")
    report.update(
        offline_ratios(
            Profile.model_validate(profile_dict), [rows[a.prompt] for a in arrivals], tier_models, usd_per_token
        )
    )
    report["setup"] = {
        "prompts": len(rows),
        "arrivals_per_run": len(arrivals),
        "rate_rps": settings.rate,
        "duration_s": settings.duration_s,
        "slo_mix": dict(settings.slo_mix),
        "budgets_ms": dict(settings.drive.budgets_ms),
        "stream": settings.drive.stream,
        "tiers": {
            t: {
                "model": tier_models[t],
                "latency_plan": settings.plans[t],
                "gpus": plans[t].gpus,
                "usd_per_million_tokens": plans[t].usd_per_token * 1e6,
                "ttft_ms_at_1k_prompt_tokens": plans[t].ttft_ms(1000),
                "decode_ms_per_token_batch1": plans[t].decode_ms_batch1,
                "decode_ms_per_token_full_batch": plans[t].decode_ms_full,
                "max_batch": settings.max_batch,
                "max_queue": settings.max_queue,
            }
            for t in TIERS
        },
        "cost_model": "x-tiergate-cost-usd when sent, else (prompt + completion tokens) x the tier's planned USD/token",
        "slo_model": "x-tiergate-slo when sent, else total time from scheduled arrival within the class budget",
    }
    return report
