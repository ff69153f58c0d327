"""What every `tiergate` command shares: the one error exit, and the one way a profile is resolved.

Kept free of heavy imports: every command module imports this at registration time, and
`tiergate --version` must not pay for a web framework or scikit-learn.

A profile is resolved in one order, lowest precedence first (`resolve_profile` does it for
`serve`; `tiergate up` runs the same steps in deployments.launcher):

1. the schema's defaults (deployments/profile.py);
2. the profile file, or the profile built from `--upstream NAME=URL` flags;
3. environment variables: TIERGATE_API_KEYS, TIERGATE_ADMIN_KEY, TIERGATE_SERVE_URL
   (deployments.profile.with_env_overrides);
4. command-line flags: `--host`, `--port` (and `up --serve-port`), through
   deployments.launcher.effective_profile.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

import typer

from router.errors import TiergateError

if TYPE_CHECKING:
    from deployments.profile import Profile

# Exit statuses: 2 for an input the command cannot use (as click does for a bad flag), 1 when
# the inputs were fine but the work itself failed (a model that would not convert, a stack that
# would not start).
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def fail(message: str, status: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print `error: <message>` on stderr and end the command with `status`; no traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(status)


@contextmanager
def errors_exit(*also: type[Exception]) -> Iterator[None]:
    """Turn tiergate's own errors (and the listed others) into `fail`.

    `also` names errors that do not derive from TiergateError, such as a plain ValueError from a
    library call. A RuntimeError (LaunchError is one) means the work failed and exits 1; every
    other error is a bad input and exits 2.
    """
    caught: tuple[type[Exception], ...] = (TiergateError, *also)
    try:
        yield
    except caught as err:
        # KeyError's str() is the repr of its key; its first argument is the message we wrote.
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        fail(message, EXIT_FAILED if isinstance(err, RuntimeError) else EXIT_BAD_INPUT)


def parse_upstream(item: str) -> tuple[str, str]:
    """One `--upstream NAME=URL` flag as (name, base URL); a bad one is a usage error."""
    name, sep, url = item.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise typer.BadParameter(f"expected NAME=URL with an http(s) base URL, got {item!r}", param_hint="--upstream")
    return name, url


def resolve_profile(
    profile: str | None, upstreams: list[tuple[str, str]], *, host: str | None, port: int | None
) -> Profile:
    """The profile a command runs with, in the precedence the module docstring gives.

    Raises the profile's own errors (ProfileError, LaunchError); callers wrap this in `errors_exit`.
    """
    from deployments.launcher import LaunchOptions, effective_profile
    from deployments.profile import load_profile, profile_from_upstreams, with_env_overrides

    if upstreams:
        # The upstream profile's own defaults for host and port; the flags below still win.
        base = with_env_overrides(profile_from_upstreams(upstreams, host=host or "127.0.0.1", port=port or 8000))
    else:
        assert profile is not None
        base = load_profile(profile)
    return effective_profile(base, LaunchOptions(gateway_host=host, gateway_port=port))
