"""`tiergate serve`: run the gateway with uvicorn (uvloop + httptools).

Every input is checked here, before uvicorn starts, so a bad setting is one `error:` line and a
non-zero exit rather than a traceback from a worker. On SIGTERM or Ctrl-C the gateway drains first
(gateway.drain); what is still in flight when the drain ends is aborted after ABORT_AFTER_S.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from gateway.cli.common import errors_exit, fail, parse_upstream, resolve_profile

# uvicorn's graceful timeout once the drain is over: the drain was the grace; this only lets the
# last responses' bytes leave before what remains is cancelled.
ABORT_AFTER_S = 1


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
        drain_wait_full_period: bool = typer.Option(
            False,
            "--drain-wait-full-period",
            help="On SIGTERM hold the whole drain period even when idle (behind a Kubernetes Service);"
            " sets gateway.drain_wait_full_period.",
        ),
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

        import shutil
        import tempfile

        import uvicorn

        from deployments.profile import resolve_profile_path
        from gateway.access import check_worker_shares
        from gateway.settings import GatewaySettings

        with errors_exit():
            resolved = resolve_profile(profile, pairs, host=host, port=port)
            # Absolute but with symlinks kept: a ConfigMap mount swaps a symlink on update, and the
            # resolved target (a dated folder) disappears with the next one.
            profile_file = str(resolve_profile_path(profile).absolute()) if profile else None
            check_worker_shares(resolved.gateway, workers)
            resolved.gateway.check_exposure()
        if drain_wait_full_period:
            held = resolved.gateway.model_copy(update={"drain_wait_full_period": True})
            resolved = resolved.model_copy(update={"gateway": held})
        gw = resolved.gateway
        level = log_level or gw.log_level
        # With N workers each writes its metrics here and a scrape merges them (gateway/metrics.py); set
        # before the gateway imports prometheus_client, which picks its mode on import; a fresh folder per
        # run. One worker keeps the in-memory registry: the files cost ~3x the metric updates
        # (tests/bench/metrics_cost.py).
        try:
            metrics_dir = tempfile.mkdtemp(prefix="tiergate-metrics-") if workers > 1 else None
        except OSError as err:
            fail(f"--workers {workers} needs a writable temporary folder for the workers' metrics (TMPDIR): {err}")
        # Where PUT /admin/policy leaves a new routing section for this serve's other workers.
        override = Path(tempfile.gettempdir()) / f"tiergate-policy-{os.getpid()}.json"
        override.unlink(missing_ok=True)
        # The one channel to the worker processes (this one too, with one worker): see gateway/settings.py.
        settings = GatewaySettings.model_validate(
            {
                "profile": resolved,
                "log_level": level.lower(),
                "profile_path": profile_file,
                "policy_override_path": str(override),
                "workers": workers,
                "handle_signals": True,
            }
        )
        os.environ.update(settings.to_env())
        tiers = ", ".join(f"{t.name} -> {t.endpoint}" for t in resolved.tiers)
        typer.echo(f"tiergate gateway on http://{gw.host}:{gw.port}/v1 ({workers} worker(s)); tiers: {tiers}")
        if metrics_dir is not None:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        else:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        try:
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
                timeout_graceful_shutdown=ABORT_AFTER_S,
            )
        finally:
            # Each run starts from zero: counters are the process tree's, and restart with it.
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)
