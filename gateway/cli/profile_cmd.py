"""`tiergate profile check FILE`: validate a profile and print it resolved."""

from __future__ import annotations

import json

import typer

from gateway.cli.common import errors_exit


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Inspect and validate profiles.", no_args_is_help=True)

    @group.command("check")
    def check(
        profile: str = typer.Argument(..., help="Profile file path or shipped profile name (e.g. local-cpu)."),
    ) -> None:
        """Validate PROFILE and print it with every default filled in (API keys masked)."""
        from deployments.profile import ProfileError, load_profile

        # ProfileError is named until it derives from ConfigError.
        with errors_exit(ProfileError):
            resolved = load_profile(profile)
        data = resolved.model_dump(mode="json")
        data["gateway"]["api_keys"] = ["***"] * len(resolved.gateway.api_keys)
        if resolved.gateway.admin_key is not None:
            data["gateway"]["admin_key"] = "***"
        typer.echo(json.dumps(data, indent=2))
        typer.echo(f"ok: profile {resolved.name!r} with {len(resolved.tiers)} tier(s)", err=True)

    app.add_typer(group, name="profile")
