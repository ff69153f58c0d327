"""`tiergate fake-upstream`: a simulated OpenAI-compatible engine for tests, demos and benchmarks."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("fake-upstream")
    def fake_upstream(
        port: int = typer.Option(9000, help="Port to listen on."),
        host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
        ttft_ms: float = typer.Option(0.0, help="Delay before the first token, in milliseconds."),
        token_delay_ms: float = typer.Option(0.0, help="Delay between tokens, in milliseconds."),
        reply_tokens: int = typer.Option(16, min=1, help="Tokens per reply (max_tokens caps it)."),
        failure_rate: float = typer.Option(0.0, min=0.0, max=1.0, help="Share of requests answered with an error."),
        failure_status: int = typer.Option(500, help="HTTP status of simulated failures."),
        fail_first: int = typer.Option(0, min=0, help="Answer the first N chat requests with --failure-status."),
        retry_after: str | None = typer.Option(None, help="Retry-After header sent with simulated failures."),
        break_after_chunks: int | None = typer.Option(
            None, min=0, help="Cut every stream's connection after this many chunks (no [DONE])."
        ),
        model: list[str] = typer.Option(
            [],
            "--model",
            help="Model name to list and accept (repeatable); none: accept any. With --replay: exactly one,"
            " the outcome table's model key whose recorded answers are served (e.g. mistralai/mistral-7b-chat).",
        ),
        seed: int | None = typer.Option(None, help="Seed for the failure draw, for reproducible runs."),
        max_context_tokens: int = typer.Option(
            0, help="Reject prompt + max_tokens above this with a 400, as vLLM does (0: no limit)."
        ),
        replay: list[str] = typer.Option(
            [],
            "--replay",
            help="Outcome table (JSONL, repeatable) to replay: each prompt is answered with --model's recorded"
            " answer; unknown prompts get a 404. Logprobs in this mode are synthetic, derived from the recorded score.",
        ),
        latency_plan: str | None = typer.Option(
            None,
            "--latency-plan",
            help="With --replay: TTFT and decode time from the capacity planner for MODEL@GPU[xN],"
            " e.g. llama-3.2-1b@l4, llama-3.1-8b@l4, llama-3.3-70b@h100x4 (replaces --ttft-ms/--token-delay-ms).",
        ),
        max_batch: int = typer.Option(8, "--max-batch", min=1, help="With --replay: requests decoded at once."),
        synthetic_logprobs: bool = typer.Option(
            False,
            "--synthetic-logprobs",
            help="With --replay: answer logprobs=true with logprobs derived from the recorded score (labelled).",
        ),
        max_queue: int = typer.Option(
            64, "--max-queue", min=0, help="With --replay: requests that may wait (FIFO); beyond, 503 + Retry-After."
        ),
    ) -> None:
        """Serve a fake OpenAI-compatible engine: /v1/chat/completions (streamed or not), /v1/models.

        Replies are deterministic text with usage and, when asked, per-token logprobs. With --replay,
        replies are a real model's recorded answers from an outcome table, at a planned GPU's speed.
        """
        from gateway.fake_upstream import FakeConfig, run_fake

        replay_config = None
        if replay:
            from gateway.replay_tier import ReplayConfig, ReplayError, ReplayTable
            from gateway.replay_tier import latency_plan as plan_latency

            if len(model) != 1:
                typer.echo("error: --replay needs exactly one --model: the table's model key to replay", err=True)
                raise typer.Exit(2)
            try:
                replay_config = ReplayConfig(
                    table=ReplayTable.from_files(replay, model[0]),
                    plan=plan_latency(latency_plan, max_batch) if latency_plan else None,
                    ttft_ms=ttft_ms,
                    token_delay_ms=token_delay_ms,
                    max_batch=max_batch,
                    max_queue=max_queue,
                    synthetic_logprobs=synthetic_logprobs,
                )
            except ReplayError as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from None
        elif latency_plan:
            typer.echo("error: --latency-plan applies to --replay only", err=True)
            raise typer.Exit(2)

        cfg = FakeConfig(
            ttft_ms=ttft_ms,
            token_delay_ms=token_delay_ms,
            reply_tokens=reply_tokens,
            failure_rate=failure_rate,
            failure_status=failure_status,
            fail_first=fail_first,
            retry_after=retry_after,
            break_after_chunks=break_after_chunks,
            models=list(model),
            seed=seed,
            max_context_tokens=max_context_tokens,
            replay=replay_config,
        )
        run_fake(cfg, host, port)
