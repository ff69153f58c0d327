"""`tiergate replay`: replay outcome tables through the real gateway and score routing against baselines."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay_command(
        data: list[Path] = typer.Option(
            ..., "--data", help="Outcome table (JSONL, or a folder of them; repeatable). Rows need all three models."
        ),
        small: str = typer.Option(..., "--small", help="Model key whose recorded answers the small tier serves."),
        mid: str = typer.Option(..., "--mid", help="Model key whose recorded answers the mid tier serves."),
        large: str = typer.Option(..., "--large", help="Model key whose recorded answers the large tier serves."),
        rate: float = typer.Option(..., "--rate", min=0.001, help="Poisson arrival rate, requests per second."),
        duration_s: float = typer.Option(..., "--duration-s", min=0.1, help="Seconds of arrivals per run (5 runs)."),
        slo_mix: str = typer.Option(
            "realtime=0.2,interactive=0.5,batch=0.3",
            "--slo-mix",
            help="Latency-class shares of the arrivals (sent as x-tiergate-latency-class); weights are normalised.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
        plot: Path | None = typer.Option(
            None, "--plot", help="Write a quality-vs-cost PNG here (needs matplotlib, the 'plot' extra)."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of arrivals, prompt order, classes and the random baseline."),
        max_requests: int | None = typer.Option(
            None, "--max-requests", min=1, help="Stop each run after this many arrivals."
        ),
        small_plan: str = typer.Option("llama-3.2-1b@l4", "--small-plan", help="Latency plan MODEL@GPU[xN] of small."),
        mid_plan: str = typer.Option("llama-3.1-8b@l4", "--mid-plan", help="Latency plan of the mid tier."),
        large_plan: str = typer.Option("llama-3.3-70b@h100x4", "--large-plan", help="Latency plan of the large tier."),
        max_batch: int = typer.Option(8, "--max-batch", min=1, help="Requests each tier decodes at once."),
        max_queue: int = typer.Option(
            64, "--max-queue", min=0, help="Requests each tier queues (FIFO) before answering 503."
        ),
        policy: str = typer.Option(
            "cascade",
            "--policy",
            help="Gateway policy under test: cascade (learned scorer + live cascade), learned (scorer only) or rule.",
        ),
        concurrency: int = typer.Option(256, "--concurrency", min=1, help="Most requests the client has in flight."),
        stream: bool = typer.Option(
            False, "--stream", help="Stream answers, so TTFT is the first token's time (else TTFT = total time)."
        ),
    ) -> None:
        """Start three replay tiers (fake-upstream --replay) and the gateway on loopback, send the same
        Poisson arrivals with model=auto and with each baseline (always_small, always_mid, always_large,
        random), and score each answer by the recorded score of the model that gave it.

        Reports quality_ratio and cost_ratio (vs always_large), slo_attainment (realtime 100 ms,
        interactive 1 s, batch 10 s total-time budgets, or the gateway's x-tiergate-slo verdict),
        escalation_rate (x-tiergate-escalations), p50/p99 TTFT. Cost: tokens x each tier's USD per
        token from the capacity planner (GPU price over a full batch's decode throughput), or the
        gateway's x-tiergate-cost-usd. Progress goes to stderr.
        """
        import json

        from gateway.replay import DriveSettings, ReplaySettings, run_replay
        from gateway.replay_scoring import parse_slo_mix, plot_quality_cost, render_table
        from gateway.replay_tier import ReplayError

        def progress(line: str) -> None:
            typer.echo(line, err=True)

        try:
            if policy not in ("cascade", "learned", "rule"):
                raise typer.BadParameter("must be cascade, learned or rule", param_hint="--policy")
            settings = ReplaySettings(
                data=[str(p) for p in data],
                models={"small": small, "mid": mid, "large": large},
                rate=rate,
                duration_s=duration_s,
                slo_mix=parse_slo_mix(slo_mix),
                plans={"small": small_plan, "mid": mid_plan, "large": large_plan},
                seed=seed,
                max_requests=max_requests,
                max_batch=max_batch,
                max_queue=max_queue,
                drive=DriveSettings(concurrency=concurrency, stream=stream),
                policy=policy,
            )
            report = run_replay(settings, progress)
            if plot is not None:
                plot_quality_cost(report, plot)
                progress(f"replay: plot written to {plot}")
        except ReplayError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        typer.echo(json.dumps(report, indent=2) if as_json else render_table(report))
