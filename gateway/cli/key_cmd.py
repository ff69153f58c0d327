"""`tiergate key hash` and `tiergate key new`: API keys for a profile or Secret that stores hashes only."""

from __future__ import annotations

import sys

import typer

from gateway.cli.common import fail


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Make API keys and the hashes a profile stores.", no_args_is_help=True)

    @group.command("hash")
    def hash_cmd(
        key: str | None = typer.Argument(
            None, help="The key; left out, asked for (or read from stdin), which keeps it out of shell history."
        ),
        admin: bool = typer.Option(False, "--admin", help="Check the admin key's rule (at least 16 characters)."),
    ) -> None:
        """Print `sha256:<hex>` for KEY, to put in gateway.api_keys, gateway.keys[].key or TIERGATE_API_KEYS."""
        from deployments.keys import MIN_ADMIN_KEY_CHARS, MIN_KEY_CHARS, hash_key, is_hashed, key_rule_violation

        if key is not None:
            given = key
        elif sys.stdin.isatty():
            given = typer.prompt("Key", hide_input=True, err=True).strip()
        else:
            given = sys.stdin.readline().strip()
        if is_hashed(given):
            fail("that is already a hash; give the key itself")
        reason = key_rule_violation(given, min_chars=MIN_ADMIN_KEY_CHARS if admin else MIN_KEY_CHARS)
        if reason is not None:
            fail(reason)
        typer.echo(hash_key(given))

    @group.command("new")
    def new_cmd() -> None:
        """Print a new random key, its hash and its id (the id names the key in logs and metrics)."""
        import secrets

        from deployments.keys import hash_key, key_id

        key = "tg-" + secrets.token_urlsafe(32)
        typer.echo(f"key:  {key}\nhash: {hash_key(key)}\nid:   {key_id(key)}")

    app.add_typer(group, name="key")
