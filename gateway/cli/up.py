"""`tiergate up`: bring the whole local stack up (Ray Serve + vLLM engines + gateway) until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# None stands for the launcher's DEFAULT_RAY_CPUS, so the number has one home and `--help` does
# not import the launcher (psutil, the Serve builders) to print it.
_RAY_CPUS_HELP = "Logical CPUs for the local Ray (default: the launcher's, sized for a laptop)."


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up(
        profile: Annotated[
            str, typer.Option("--profile", "-p", help="Profile file or shipped profile name.")
        ] = "local-cpu",
        host: Annotated[str | None, typer.Option(help="Gateway host (default: the profile's).")] = None,
        port: Annotated[int | None, typer.Option(help="Gateway port (default: the profile's).")] = None,
        serve_port: Annotated[
            int | None, typer.Option(help="Ray Serve HTTP port (default: the profile's ray_serve_http_port).")
        ] = None,
        state_dir: Annotated[
            Path | None, typer.Option(help="Where the lock/pid file lives (default: <cache dir>/run).")
        ] = None,
        ray_cpus: Annotated[int | None, typer.Option(min=1, help=_RAY_CPUS_HELP)] = None,
        no_gateway: Annotated[bool, typer.Option("--no-gateway", help="Start Ray Serve only (no gateway).")] = False,
        ready_timeout_s: Annotated[
            float, typer.Option("--ready-timeout", help="Seconds to wait for the engines.")
        ] = 600.0,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Stream Ray and vLLM logs here.")] = False,
    ) -> None:
        """Start Ray, deploy the profile's tiers, start the gateway; Ctrl-C stops all within 20 s.

        Flags win over TIERGATE_* environment variables, which win over the profile file.
        """
        from deployments.launcher import DEFAULT_RAY_CPUS, LaunchOptions, run_up

        opts = LaunchOptions(
            profile=profile,
            gateway_host=host,
            gateway_port=port,
            serve_port=serve_port,
            state_dir=state_dir,
            ray_num_cpus=DEFAULT_RAY_CPUS if ray_cpus is None else ray_cpus,
            start_gateway=not no_gateway,
            ready_timeout_s=ready_timeout_s,
            verbose=verbose,
        )
        raise typer.Exit(run_up(opts))
