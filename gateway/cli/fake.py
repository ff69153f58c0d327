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
        model: list[str] = typer.Option(
            [], "--model", help="Model name to list and accept (repeatable); none: accept any."
        ),
        seed: int | None = typer.Option(None, help="Seed for the failure draw, for reproducible runs."),
        max_context_tokens: int = typer.Option(
            0, help="Reject prompt + max_tokens above this with a 400, as vLLM does (0: no limit)."
        ),
    ) -> None:
        """Serve a fake OpenAI-compatible engine: /v1/chat/completions (streamed or not), /v1/models.

        Replies are deterministic text with usage and, when asked, per-token logprobs.
        """
        from gateway.fake_upstream import FakeConfig, run_fake

        cfg = FakeConfig(
            ttft_ms=ttft_ms,
            token_delay_ms=token_delay_ms,
            reply_tokens=reply_tokens,
            failure_rate=failure_rate,
            failure_status=failure_status,
            models=list(model),
            seed=seed,
            max_context_tokens=max_context_tokens,
        )
        run_fake(cfg, host, port)
