"""`tiergate serve`: run the gateway with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import os

import typer

from gateway.cli.common import errors_exit, parse_upstream, resolve_profile


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

        Flags win over TIERGATE_* environment variables, which win over the profile file.

        Examples:\n
          tiergate serve --profile local-cpu\n
          tiergate serve --upstream small=http://127.0.0.1:9001/v1 --upstream large=http://127.0.0.1:9002/v1
        """
        if bool(profile) == bool(upstream):
            raise typer.BadParameter("give either --profile or one or more --upstream NAME=URL")
        pairs = [parse_upstream(u) for u in upstream]

        import uvicorn

        from gateway.app import ENV_PROFILE, ENV_UPSTREAMS

        with errors_exit():
            resolved = resolve_profile(profile, pairs, host=host, port=port)
        gw = resolved.gateway
        if pairs:
            os.environ[ENV_UPSTREAMS] = ",".join(f"{n}={u}" for n, u in pairs)
            os.environ["TIERGATE_HOST"] = gw.host
            os.environ["TIERGATE_PORT"] = str(gw.port)
        else:
            assert profile is not None
            os.environ[ENV_PROFILE] = profile
        level = log_level or gw.log_level
        # Each worker process (this one too, with one worker) configures its logging from this
        # in gateway.app.app_from_env, after uvicorn has set up its own loggers.
        os.environ["TIERGATE_LOG_LEVEL"] = level
        tiers = ", ".join(f"{t.name} -> {t.endpoint}" for t in resolved.tiers)
        typer.echo(f"tiergate gateway on http://{gw.host}:{gw.port}/v1 ({workers} worker(s)); tiers: {tiers}")
        uvicorn.run(
            "gateway.app:app_from_env",
            factory=True,
            host=gw.host,
            port=gw.port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level=level,
            timeout_graceful_shutdown=15,
        )
