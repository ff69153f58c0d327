"""`tiergate plan`: parameters, memory, KV cache, GPUs, latency and cost for one model on one GPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

# The planner is pure Python with no third-party imports (about 30 ms), so its catalogues can
# name the valid keys in `--help`; everything heavier loads inside the commands.
from deployments.planning import load_architecture as load_architecture  # one lookup, shared with serving
from deployments.planning import load_calibration
from gateway.cli.common import errors_exit
from router.capacity import CATALOGUE, GPUS, KV_DTYPES, WEIGHT_DTYPES, Plan, PlanInputs, plan
from router.capacity.architectures import ArchitectureError
from router.capacity.dtypes import DTypeError
from router.capacity.hardware import GPUError
from router.capacity.hardware import gpu as gpu_by_key
from router.capacity.memory import GIB, VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
from router.capacity.vllm_versions import DEFAULT_VLLM_VERSION, VLLM_VERSIONS

GB = 1e9


def _bytes(n: float) -> str:
    return f"{n / GB:,.2f} GB ({n / GIB:,.2f} GiB)"


def _count(n: int) -> str:
    return f"{n:,} ({n / 1e9:,.3f} B)" if n >= 1e8 else f"{n:,} ({n / 1e6:,.1f} M)"


def _usd(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.2f}"


def render_table(p: Plan) -> str:
    """The plan as an aligned two-column table; GB = 1e9 bytes, GiB = 2^30 bytes."""
    gap = (p.params_rough_estimate - p.params_total) / p.params_total
    rows: list[tuple[str, str]] = [
        (
            "model / gpu",
            f"{p.model} on {p.gpus} x {p.gpu} ({_bytes(p.gpu_memory_bytes)} each;"
            f" CUDA sees {p.gpu_cuda_memory_bytes / GIB:,.2f} GiB)",
        ),
        ("dtype / kv dtype", f"{p.dtype} / {p.kv_dtype}"),
        ("params_total", _count(p.params_total)),
        ("  rough 12*L*d^2", f"{_count(p.params_rough_estimate)}, {gap:+.1%} vs exact"),
    ]
    if p.params_active != p.params_total:
        rows.append(("params_active", _count(p.params_active)))
        rows.append(("  rough total/experts", _count(p.params_active_rough_estimate)))
    if p.params_mtp_module:
        rows.append(("params_mtp_module", f"{_count(p.params_mtp_module)} (not in total)"))
    rows += [
        ("weights_bytes", f"{_bytes(p.weights_bytes)}; {_bytes(p.weights_bytes_per_gpu)} per GPU"),
        (
            "kv_bytes_per_token",
            f"{p.kv_bytes_per_token:,} B (all heads, as if MHA: {p.kv_bytes_per_token_mha:,} B)",
        ),
        (
            "reserve per GPU",
            f"{_bytes(p.reserve_bytes_per_gpu)} (activations, non-torch, TP buffers; vLLM {p.vllm_version})",
        ),
        (
            "kv budget per GPU",
            _bytes(p.kv_budget_bytes_per_gpu) + (" (short)" if p.kv_budget_bytes_per_gpu < 0 else ""),
        ),
        ("kv_tokens_capacity", f"{p.kv_tokens_capacity:,} tokens (blocks of {p.block_size_tokens})"),
        (
            "max_batch",
            f"{p.max_batch:,} sequences of {p.context_tokens:,} tokens (max_num_seqs {p.max_num_seqs:,},"
            f" max_num_batched_tokens {p.max_num_batched_tokens:,})",
        ),
        (
            "min_gpus / TP",
            "does not fit in 256 GPUs"
            if p.min_gpus is None
            else f"{p.min_gpus} GPU(s): tensor_parallel_size={p.tensor_parallel_size}"
            + (f", pipeline_parallel_size={p.pipeline_parallel_size}" if p.pipeline_parallel_size != 1 else ""),
        ),
        ("fits", f"{p.fits} on {p.gpus} GPU(s)" + (f": {p.fit_problem}" if p.fit_problem else "")),
        ("ttft_ms_estimate", f"{p.ttft_ms_estimate:,.1f} ms for {p.prompt_tokens:,} prompt tokens"),
        ("decode per seq", f"{p.decode_tokens_per_s_per_seq:,.1f} tokens/s, every sequence at full context"),
        (
            "decode aggregate",
            f"{p.decode_tokens_per_s_aggregate:,.1f} tokens/s at batch {p.batch}"
            f" (TP all-reduce {p.tp_comm_fraction:.1%} of a step)",
        ),
        (
            "monthly_cost_usd",
            f"${p.monthly_cost_usd:,.2f} (${p.price_per_gpu_hour_usd:g}/h x {p.gpus} x {p.hours:g} h"
            f" x {p.utilization:g})",
        ),
        ("monthly_cost_reserved_usd", f"${p.monthly_cost_reserved_usd:,.2f}"),
        (
            "usd_per_million_tokens",
            f"{_usd(p.usd_per_million_tokens)} (reserved: {_usd(p.usd_per_million_tokens_reserved)})",
        ),
        (
            "assumptions",
            f"gpu_memory_utilization={p.gpu_memory_utilization:g}, MFU={p.flops_fraction:g},"
            f" bandwidth efficiency={p.bandwidth_fraction:g}, step {p.step_overhead_s * 1e3:g} ms,"
            f" server {p.server_overhead_s * 1e3:g} ms",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"caveat: {n}" for n in p.notes]
    return "\n".join(lines)


def _calibrate(files: list[Path], name: str, out: Path | None) -> None:
    """Fit a calibration from vLLM logs (*.log, *.txt) and benchmark JSON (*.json); print or write it."""
    from router.capacity.calibration import (
        CalibrationError,
        decode_roofline,
        fit,
        parse_benchmarks,
        parse_vllm_log,
        prefill_roofline,
    )

    with errors_exit(CalibrationError, ArchitectureError, GPUError, DTypeError, ValueError, OSError):
        profiles, points = [], []
        for path in files:
            text = path.read_text(encoding="utf-8", errors="replace")
            if path.suffix == ".json":
                points += parse_benchmarks(json.loads(text))
            else:
                profiles.append(parse_vllm_log(text))
        calibration = fit(name, profiles, points, decode_roofline, prefill_roofline)
        if out is not None:
            out.write_text(calibration.to_json() + "\n", encoding="utf-8")
    typer.echo(calibration.to_json())


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_command(
        model: str | None = typer.Option(
            None, "--model", help=f"Catalogue key ({', '.join(CATALOGUE)}) or config.json."
        ),
        gpu: str | None = typer.Option(None, "--gpu", help=f"GPU: {', '.join(GPUS)}."),
        dtype: str = typer.Option("bf16", "--dtype", help=f"Weights: {', '.join(WEIGHT_DTYPES)}."),
        kv_dtype: str | None = typer.Option(
            None, "--kv-dtype", help=f"KV cache: {', '.join(KV_DTYPES)} (default: bf16, fp32 for fp32)."
        ),
        gpus: int | None = typer.Option(None, "--gpus", min=1, help="GPUs to plan for (default: min_gpus)."),
        gpu_memory_utilization: float = typer.Option(
            VLLM_DEFAULT_GPU_MEMORY_UTILIZATION,
            "--gpu-memory-utilization",
            min=0.01,
            max=1.0,
            help="vLLM's share of each GPU's memory.",
        ),
        kv_budget_gib: float | None = typer.Option(
            None, "--kv-budget-gib", min=0.0, help="Fixed KV pool per GPU in GiB (2^30 bytes)."
        ),
        context_tokens: int | None = typer.Option(
            None, "--context-tokens", min=1, help="Tokens per sequence (default: the model's maximum)."
        ),
        prompt_tokens: int = typer.Option(1024, "--prompt-tokens", min=1, help="Prompt length for TTFT."),
        price_per_gpu_hour: float | None = typer.Option(
            None, "--price-per-gpu-hour", min=0.0, help="USD per GPU-hour (default: the catalogue's)."
        ),
        hours: float = typer.Option(720.0, "--hours", min=0.0, help="Hours in the month."),
        utilization: float = typer.Option(1.0, "--utilization", min=0.0, max=1.0, help="Busy share of hours."),
        batch: int | None = typer.Option(
            None, "--batch", min=1, help="Decode and TTFT figures at this batch (default: max_batch)."
        ),
        max_num_seqs: int | None = typer.Option(
            None, "--max-num-seqs", min=1, help="vLLM's max_num_seqs (default: the version's, per GPU)."
        ),
        max_num_batched_tokens: int | None = typer.Option(
            None, "--max-num-batched-tokens", min=1, help="vLLM's max_num_batched_tokens (default: the version's)."
        ),
        version: str = typer.Option(
            DEFAULT_VLLM_VERSION, "--vllm-version", help=f"vLLM memory-profile behaviour: {', '.join(VLLM_VERSIONS)}."
        ),
        calibration_file: Path | None = typer.Option(
            None, "--calibration", help="A calibration file (from --calibrate) to plan with; a tier's calibration_file."
        ),
        calibrate: list[Path] | None = typer.Option(
            None, "--calibrate", help="Fit a calibration from vLLM start-up logs and benchmark JSON (repeatable)."
        ),
        calibration_name: str = typer.Option("default", "--calibration-name", help="Name stored in the calibration."),
        calibration_out: Path | None = typer.Option(None, "--calibration-out", help="Write the calibration here."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON (keys carry their units)."),
    ) -> None:
        """Plan MODEL on GPU: params, memory, KV tokens, batch, GPUs/TP, latency and monthly cost."""
        if calibrate:
            _calibrate(calibrate, calibration_name, calibration_out)
            return
        if model is None or gpu is None:
            typer.echo("error: --model and --gpu are required (or --calibrate FILE)", err=True)
            raise typer.Exit(2)
        # Architecture, GPU and dtype errors are named until they derive from ConfigError;
        # PlanInputs rejects an out-of-range number with a plain ValueError.
        from router.capacity.calibration import CalibrationError

        with errors_exit(ArchitectureError, GPUError, DTypeError, CalibrationError, ValueError, OSError):
            arch = load_architecture(model)
            device = gpu_by_key(gpu)
            inputs = PlanInputs(
                dtype=dtype,
                kv_dtype=kv_dtype,
                gpus=gpus,
                gpu_memory_utilization=gpu_memory_utilization,
                kv_budget_bytes=None if kv_budget_gib is None else int(kv_budget_gib * GIB),
                context_tokens=context_tokens,
                prompt_tokens=prompt_tokens,
                price_per_gpu_hour_usd=price_per_gpu_hour,
                hours=hours,
                utilization=utilization,
                batch=batch,
                max_num_seqs=max_num_seqs,
                max_num_batched_tokens=max_num_batched_tokens,
                vllm_version=version,
            )
            if calibration_file is not None:
                inputs = load_calibration(calibration_file).apply(inputs)  # the reader a tier's calibration_file uses
            result = plan(arch, device, inputs)
        if as_json:
            data: dict[str, Any] = result.to_dict()
            typer.echo(json.dumps(data, indent=2))
        else:
            typer.echo(render_table(result))
