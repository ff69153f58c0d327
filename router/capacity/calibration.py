"""Calibrations: a fleet's own vLLM start-up logs and benchmark points fitted into planner inputs.

Pure: callers read the files and hand over their text. Two kinds of evidence:

- vLLM start-up logs. The memory profile lines of every release line this was written against:
  0.6's table (`model weights take 14.96GiB`, `non_torch_memory 1.79GiB`, `PyTorch activation
  peak memory 1.26GiB`), 0.7-0.8's sentence (`...; non_torch_memory takes 0.20GiB; ...`), the v1
  engine's (`Actual usage is 7.51 GiB for weight, 1.89 GiB for peak activation, 2.07 GiB for
  non-torch memory`), and the pool lines (`Available KV cache memory: 63.76 GiB`, `GPU KV cache
  size: 1,044,688 tokens`, `# GPU blocks: 7351`). The tensor-parallel degree comes from the
  engine's config line. From these the non-torch memory at TP = 1 and the communication buffers
  at TP > 1 are fitted (medians), the reserve terms the planner cannot derive from a model.
- Benchmark points (`BENCHMARK_FORMAT` below): measured time per output token and time to first
  token for a (model, GPU, GPUs, batch, prompt) case. Decode steps are fitted as
  `roofline bytes / (bandwidth x fraction) + step overhead` by least squares; prefill as the
  median achieved fraction of peak FLOP/s once the fixed costs are taken out.

A calibration is stored as JSON (`Calibration.to_json`) and applied to `PlanInputs`.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from router.capacity.architectures import catalogue_architecture
from router.capacity.hardware import gpu
from router.capacity.memory import GIB
from router.capacity.perf import Efficiency
from router.capacity.plan import PlanInputs, decode_step_for, prefill_parts_for
from router.errors import ConfigError

BENCHMARK_FORMAT = """{"points": [{"model": "llama-3.1-8b", "gpu": "a100-40gb", "gpus": 1,
 "dtype": "bf16", "batch": 1, "prompt_tokens": 1024, "context_tokens": 1152,
 "tpot_ms": 13.3, "ttft_ms": 95.0}]}  (tpot_ms and ttft_ms each optional; model: a catalogue key)"""


class CalibrationError(ConfigError):
    """A calibration input that cannot be read or fitted; the message says which and why."""


@dataclass(frozen=True, slots=True)
class LogProfile:
    """One engine's memory profile as its start-up log states it (bytes; None when not logged)."""

    tensor_parallel_size: int
    weights_bytes: int | None
    activation_bytes: int | None
    non_torch_bytes: int | None
    kv_cache_bytes: int | None
    kv_cache_tokens: int | None


_NUM = r"([0-9][0-9.]*)"
_PATTERNS: dict[str, tuple[re.Pattern[str], ...]] = {
    "weights": (
        re.compile(r"model weights take\s+" + _NUM + r"\s*GiB"),
        re.compile(_NUM + r" GiB for weight"),
        re.compile(r"weights memory: " + _NUM + r"\s*GiB"),
    ),
    "activation": (
        re.compile(r"PyTorch activation peak memory(?: takes)?\s+" + _NUM + r"\s*GiB"),
        re.compile(_NUM + r" GiB for peak activation"),
        re.compile(r"torch peak memory increase: " + _NUM + r"\s*GiB"),
    ),
    "non_torch": (
        re.compile(r"non_torch_memory(?: takes)?\s+" + _NUM + r"\s*GiB"),
        re.compile(_NUM + r" GiB for non-torch memory"),
        re.compile(r"non-torch forward increase memory: " + _NUM + r"\s*GiB"),
    ),
    "kv_bytes": (
        re.compile(r"Available KV cache memory: " + _NUM + r"\s*GiB"),
        re.compile(r"available_kv_cache_memory\s+" + _NUM + r"\s*GiB"),
        re.compile(r"reserved for KV Cache is " + _NUM + r"\s*GiB"),
    ),
    "kv_tokens": (re.compile(r"GPU KV cache size: ([0-9,]+) tokens"),),
    "blocks": (re.compile(r"# (?:GPU|CUDA) blocks: ([0-9]+)"),),
    "tp": (
        re.compile(r"tensor_parallel_size[=': ]+([0-9]+)"),
        re.compile(r"(?:-tp|--tensor-parallel-size)[ =]([0-9]+)"),
    ),
}


def _first(name: str, text: str) -> str | None:
    for pattern in _PATTERNS[name]:
        found = pattern.search(text)
        if found:
            return found.group(1)
    return None


def _gib(name: str, text: str) -> int | None:
    value = _first(name, text)
    return None if value is None else int(float(value) * GIB)


def parse_vllm_log(text: str, block_size_tokens: int = 16) -> LogProfile:
    """The memory profile one vLLM start-up log states; CalibrationError when it states none."""
    tokens_text = _first("kv_tokens", text)
    tokens = int(tokens_text.replace(",", "")) if tokens_text else None
    blocks = _first("blocks", text)
    if tokens is None and blocks is not None:
        tokens = int(blocks) * block_size_tokens
    profile = LogProfile(
        tensor_parallel_size=int(_first("tp", text) or 1),
        weights_bytes=_gib("weights", text),
        activation_bytes=_gib("activation", text),
        non_torch_bytes=_gib("non_torch", text),
        kv_cache_bytes=_gib("kv_bytes", text),
        kv_cache_tokens=tokens,
    )
    if profile.non_torch_bytes is None and profile.kv_cache_bytes is None and tokens is None:
        raise CalibrationError("no vLLM memory-profile or KV cache line found")
    return profile


@dataclass(frozen=True, slots=True)
class BenchmarkPoint:
    """One measured case; see BENCHMARK_FORMAT."""

    model: str
    gpu: str
    gpus: int
    dtype: str
    batch: int
    prompt_tokens: int
    context_tokens: int
    tpot_ms: float | None
    ttft_ms: float | None


def parse_benchmarks(data: Mapping[str, Any]) -> list[BenchmarkPoint]:
    """Benchmark points from a parsed JSON document in BENCHMARK_FORMAT."""
    raw = data.get("points")
    if not isinstance(raw, list) or not raw:
        raise CalibrationError('a benchmark file needs a non-empty "points" list: ' + BENCHMARK_FORMAT)
    points = []
    for i, p in enumerate(raw):
        try:
            point = BenchmarkPoint(
                model=str(p["model"]),
                gpu=str(p["gpu"]),
                gpus=int(p.get("gpus", 1)),
                dtype=str(p.get("dtype", "bf16")),
                batch=int(p.get("batch", 1)),
                prompt_tokens=int(p["prompt_tokens"]),
                context_tokens=int(p.get("context_tokens", p["prompt_tokens"])),
                tpot_ms=None if p.get("tpot_ms") is None else float(p["tpot_ms"]),
                ttft_ms=None if p.get("ttft_ms") is None else float(p["ttft_ms"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(f"benchmark point {i}: {err!r}; expected {BENCHMARK_FORMAT}") from None
        if min(point.gpus, point.batch, point.prompt_tokens, point.context_tokens) < 1:
            raise CalibrationError(f"benchmark point {i}: counts must be >= 1")
        points.append(point)
    return points


@dataclass(frozen=True, slots=True)
class Calibration:
    """Fitted planner inputs; None (or the default Efficiency field) where no evidence fitted it."""

    name: str
    non_torch_bytes_per_gpu: int | None
    comm_buffer_bytes_per_gpu: int | None
    efficiency: Efficiency
    evidence: tuple[str, ...]  # one line per fitted term: what it came from

    def apply(self, inputs: PlanInputs) -> PlanInputs:
        """`inputs` with this calibration's terms in place of the defaults."""
        changes: dict[str, Any] = {"efficiency": self.efficiency}
        if self.non_torch_bytes_per_gpu is not None:
            changes["non_torch_bytes_per_gpu"] = self.non_torch_bytes_per_gpu
        if self.comm_buffer_bytes_per_gpu is not None:
            changes["comm_buffer_bytes_per_gpu"] = self.comm_buffer_bytes_per_gpu
        return replace(inputs, **changes)

    def to_json(self) -> str:
        eff = self.efficiency
        return json.dumps(
            {
                "name": self.name,
                "non_torch_bytes_per_gpu": self.non_torch_bytes_per_gpu,
                "comm_buffer_bytes_per_gpu": self.comm_buffer_bytes_per_gpu,
                "flops_fraction": eff.flops_fraction,
                "bandwidth_fraction": eff.bandwidth_fraction,
                "step_overhead_s": eff.step_overhead_s,
                "server_overhead_s": eff.server_overhead_s,
                "evidence": list(self.evidence),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        try:
            d = json.loads(text)
            eff = Efficiency(
                float(d["flops_fraction"]),
                float(d["bandwidth_fraction"]),
                float(d["step_overhead_s"]),
                float(d["server_overhead_s"]),
            )
            return cls(
                str(d["name"]),
                None if d.get("non_torch_bytes_per_gpu") is None else int(d["non_torch_bytes_per_gpu"]),
                None if d.get("comm_buffer_bytes_per_gpu") is None else int(d["comm_buffer_bytes_per_gpu"]),
                eff,
                tuple(str(x) for x in d.get("evidence", [])),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(f"not a calibration file: {err!r}") from None


# point -> (the roofline's seconds at 100 % of peak with no fixed costs, fixed seconds such as
# all-reduces that the fit must not attribute to the efficiency).
Roofline = Callable[[BenchmarkPoint], tuple[float, float]]


def _fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares y = a x + c with c >= 0 (c = 0 refits through the origin)."""
    if len(xs) >= 2 and statistics.pvariance(xs) > 0:
        slope, intercept = statistics.linear_regression(xs, ys)
        if intercept >= 0 and slope > 0:
            return slope, intercept
    slope = sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)
    return slope, 0.0


def fit(
    name: str,
    profiles: Iterable[LogProfile],
    points: Iterable[BenchmarkPoint],
    decode_roofline: Roofline,
    prefill_roofline: Roofline,
    base: Efficiency | None = None,
) -> Calibration:
    """Fit the reserve terms from `profiles` and the efficiencies from `points`.

    `decode_roofline(point)` gives (memory-bound step seconds at full bandwidth, other fixed
    seconds of the step such as all-reduces); `prefill_roofline(point)` gives (seconds at 100 %
    MFU, fixed seconds besides the server and step overheads). Terms without evidence keep `base`.
    """
    eff = base or Efficiency()
    evidence: list[str] = []
    profiles = list(profiles)
    ones = [p.non_torch_bytes for p in profiles if p.tensor_parallel_size == 1 and p.non_torch_bytes is not None]
    non_torch = int(statistics.median(ones)) if ones else None
    if non_torch is not None:
        evidence.append(f"non_torch_bytes_per_gpu: median of {len(ones)} TP=1 log(s)")
    many = [p.non_torch_bytes for p in profiles if p.tensor_parallel_size > 1 and p.non_torch_bytes is not None]
    comm = None
    if many:
        comm = max(0, int(statistics.median(many)) - (non_torch or 0))
        evidence.append(f"comm_buffer_bytes_per_gpu: median of {len(many)} TP>1 log(s) less the TP=1 term")
    points = list(points)
    decode = [p for p in points if p.tpot_ms is not None]
    if decode:
        xs, ys = [], []
        for p in decode:
            memory_s, fixed_s = decode_roofline(p)
            xs.append(memory_s)
            ys.append(max(p.tpot_ms or 0.0, 0.0) / 1e3 - fixed_s)
        if len(decode) == 1:
            # One point cannot split the two terms: keep the step cost, fit the fraction.
            overhead = eff.step_overhead_s
            fraction = min(1.0, xs[0] / max(ys[0] - overhead, 1e-9))
        else:
            slope, overhead = _fit_line(xs, ys)
            fraction = min(1.0, 1.0 / slope)
        eff = replace(eff, bandwidth_fraction=fraction, step_overhead_s=overhead)
        evidence.append(f"bandwidth_fraction, step_overhead_s: fitted to {len(decode)} decode point(s)")
    prefill = [p for p in points if p.ttft_ms is not None]
    if prefill:
        fractions = []
        for p in prefill:
            at_peak_s, fixed_s = prefill_roofline(p)
            left = (p.ttft_ms or 0.0) / 1e3 - fixed_s - eff.server_overhead_s - eff.step_overhead_s
            if left > 0:
                fractions.append(min(1.0, at_peak_s / left))
        if fractions:
            eff = replace(eff, flops_fraction=statistics.median(fractions))
            evidence.append(f"flops_fraction: median of {len(fractions)} prefill point(s)")
    return Calibration(name, non_torch, comm, eff, tuple(evidence))


_IDEAL = Efficiency(1.0, 1.0, 0.0, 0.0)


def _inputs(point: BenchmarkPoint) -> PlanInputs:
    return PlanInputs(
        dtype=point.dtype,
        gpus=point.gpus,
        context_tokens=point.context_tokens,
        prompt_tokens=point.prompt_tokens,
        batch=point.batch,
        efficiency=_IDEAL,
    )


def decode_roofline(point: BenchmarkPoint) -> tuple[float, float]:
    """The planner's decode step for `point` at 100 % bandwidth: (memory seconds, all-reduce seconds)."""
    step = decode_step_for(catalogue_architecture(point.model), gpu(point.gpu), _inputs(point), point.batch)
    return step.memory_s, step.comm_s


def prefill_roofline(point: BenchmarkPoint) -> tuple[float, float]:
    """The planner's prefill for `point` at 100 % MFU with no fixed costs: (compute seconds, all-reduces)."""
    return prefill_parts_for(catalogue_architecture(point.model), gpu(point.gpu), _inputs(point))
