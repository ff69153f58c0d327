"""`tiergate profile check FILE`: validate a profile and print it resolved.

`tiergate profile export NAME --out FILE`: write a profile as a standalone file without its keys,
for a Kubernetes ConfigMap (k8s/policy/profile.yaml); keys reach the pod from a Secret instead.
"""

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

    @group.command("export")
    def export(
        profile: str = typer.Argument(..., help="Profile file path or shipped profile name (e.g. gpu-h100)."),
        out: str | None = typer.Option(None, "--out", "-o", help="File to write (default: standard output)."),
    ) -> None:
        """Write PROFILE as YAML for a ConfigMap, without API keys or the admin key.

        Only what the file sets is written (defaults stay defaults); TIERGATE_* variables are not
        applied, so keys in the environment never land in the file.
        """
        from pathlib import Path

        from deployments.profile import ProfileError
        from deployments.profile_export import export_profile

        with errors_exit(ProfileError):
            text, dropped = export_profile(profile)
        if out is None:
            typer.echo(text, nl=False)
        else:
            Path(out).write_text(text, encoding="utf-8")
        for field in dropped:
            typer.echo(f"note: {field} left out; give it through the Secret (TIERGATE_* env)", err=True)

    app.add_typer(group, name="profile")
