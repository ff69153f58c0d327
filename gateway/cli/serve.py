"""`tiergate serve`: run the gateway with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import os

import typer

from deployments.profile import ProfileError, load_profile, profile_from_upstreams, with_env_overrides


def _parse_upstream(item: str) -> tuple[str, str]:
    name, sep, url = item.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"expected NAME=URL with an http(s) base URL, got {item!r}", param_hint="--upstream")
    return name, url


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        profile: str | None = typer.Option(
            None, "--profile", "-p", help="Profile file or shipped profile name (e.g. local-cpu)."
        ),
        upstream: list[str] = typer.Option(
            [],
            "--upstream",
            "-u",
            help=("NAME=URL of an OpenAI-compatible base URL (repeatable, cheapest first); used instead of a profile."),
        ),
        host: str | None = typer.Option(None, help="Listen address (default: the profile's, else 127.0.0.1)."),
        port: int | None = typer.Option(None, help="Listen port (default: the profile's, else 8000)."),
        workers: int = typer.Option(1, min=1, help="Worker processes."),
        log_level: str | None = typer.Option(None, help="debug, info, warning or error (default: the profile's)."),
    ) -> None:
        """Serve the OpenAI-compatible gateway.

        Examples:\n
          tiergate serve --profile local-cpu\n
          tiergate serve --upstream small=http://127.0.0.1:9001/v1 --upstream large=http://127.0.0.1:9002/v1
        """
        import uvicorn

        from gateway.settings import GatewaySettings

        if bool(profile) == bool(upstream):
            raise typer.BadParameter("give either --profile or one or more --upstream NAME=URL")
        try:
            if upstream:
                pairs = [_parse_upstream(u) for u in upstream]
                resolved = profile_from_upstreams(pairs, host=host or "127.0.0.1", port=port or 8000)
                resolved = with_env_overrides(resolved)
            else:
                assert profile is not None
                resolved = load_profile(profile)
        except ProfileError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        gw = resolved.gateway
        bind_host, bind_port = host or gw.host, port or gw.port
        level = log_level or gw.log_level
        # The one channel to the worker processes (this one too, with one worker): see gateway/settings.py.
        settings = GatewaySettings.model_validate({"profile": resolved, "log_level": level.lower()})
        os.environ.update(settings.to_env())
        tiers = ", ".join(f"{t.name} -> {t.endpoint}" for t in resolved.tiers)
        typer.echo(f"tiergate gateway on http://{bind_host}:{bind_port}/v1 ({workers} worker(s)); tiers: {tiers}")
        uvicorn.run(
            "gateway.app:app_from_env",
            factory=True,
            host=bind_host,
            port=bind_port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level=level,
            timeout_graceful_shutdown=15,
        )
