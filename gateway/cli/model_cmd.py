"""`tiergate model prepare`: convert the packaged stand-in model into a Hugging Face folder once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.common import errors_exit

_CACHE_HELP = "Where prepared models live (default: $TIERGATE_CACHE_DIR or ~/.cache/tiergate)."


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Prepare the models the local profile serves.", no_args_is_help=True)

    @group.command("prepare")
    def prepare(cache: Annotated[Path | None, typer.Option("--cache-dir", help=_CACHE_HELP)] = None) -> None:
        """Convert the stand-in model (SmolLM2-135M-Instruct GGUF) to float32 weights; idempotent."""
        from deployments.model import ModelPrepareError, cache_dir, prepare_stand_in

        root = cache if cache is not None else cache_dir()
        # ModelPrepareError is named until it derives from LaunchError; a RuntimeError, it exits 1.
        with errors_exit(ModelPrepareError):
            path = prepare_stand_in(root, progress=lambda msg: typer.echo(f"==> {msg}", err=True))
        typer.echo(str(path))

    app.add_typer(group, name="model")
