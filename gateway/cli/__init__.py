"""The `tiergate` command. Each subcommand lives in its own module and registers itself here.

Registration stays cheap: a command module imports typer, the standard library and the pure
capacity planner at the top, and everything heavier (the web stack, scikit-learn, skops, Ray)
inside the function that runs the command, so `tiergate --version`, `--help` and `tiergate plan`
answer in a fraction of a second. tests/unit/test_cli_imports.py holds that line.
"""

from __future__ import annotations

import typer

from gateway.cli import fake, key_cmd, model_cmd, plan, profile_cmd, replay_cmd, router_cmd, serve, up

app = typer.Typer(
    name="tiergate",
    help="tiergate: one OpenAI-compatible endpoint over a ladder of model tiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from gateway import __version__

        typer.echo(f"tiergate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """tiergate: one OpenAI-compatible endpoint over a ladder of model tiers."""


for _module in (serve, fake, profile_cmd, plan, router_cmd, model_cmd, up, replay_cmd, key_cmd):
    _module.register(app)


def main() -> None:
    app()
