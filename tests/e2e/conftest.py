"""Real processes on free loopback ports: fake tiers (`tiergate fake-upstream`) behind a gateway."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest

from tests.procs import fake_upstream, gateway, write_profile

API_KEY = "sk-test-0123456789"


@dataclass
class Stack:
    base_url: str
    fakes: dict[str, str]  # tier name -> fake base URL
    clients: dict[str, openai.OpenAI] = field(default_factory=dict)

    def client(self, api_key: str = "unused") -> openai.OpenAI:
        """One official client per key, closed with the stack (no sockets left to the GC)."""
        if api_key not in self.clients:
            self.clients[api_key] = openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0)
        return self.clients[api_key]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def _stack(
    tmp: pytest.TempPathFactory,
    fake_args: Mapping[str, tuple[str, ...]],
    gateway_settings: dict[str, object] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Fakes started per tier (same arguments, same fake), a gateway over them, clients closed after."""
    with ExitStack() as stack:
        started: dict[tuple[str, ...], str] = {}
        for args in fake_args.values():
            if args not in started:
                started[args] = stack.enter_context(fake_upstream(*args))
        fakes = {tier: started[args] for tier, args in fake_args.items()}
        path = Path(tmp.mktemp("stack")) / "profile.yaml"
        write_profile(path, "test-fake", endpoints=fakes, gateway=gateway_settings or {})
        served = Stack(stack.enter_context(gateway(path, env=env)), fakes)
        try:
            yield served
        finally:
            served.close()


@pytest.fixture(scope="session")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Three working fake tiers; small tokens arrive with a little delay so streams are real streams."""
    fakes = {"small": ("--token-delay-ms", "1"), "medium": (), "large": ("--reply-tokens", "24")}
    yield from _stack(tmp_path_factory, fakes, {"max_body_bytes": 65536})


@pytest.fixture(scope="session")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """small always fails (500), medium answers too late, large enforces a small context window."""
    fakes = {
        "small": ("--failure-rate", "1"),
        "medium": ("--ttft-ms", "5000"),
        "large": ("--max-context-tokens", "64"),
    }
    # The breaker stays off here: these tests pin small's failure answers (502, 504), which an open
    # breaker would turn into fast 503s; tests/e2e/test_faults.py proves the breaker on its own stacks.
    yield from _stack(tmp_path_factory, fakes, {"request_timeout_s": 1.0, "resilience": {"breaker_enabled": False}})


@pytest.fixture(scope="session")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway whose API key comes from the environment (one fake serves all three tiers)."""
    fakes: dict[str, tuple[str, ...]] = {"small": (), "medium": (), "large": ()}
    yield from _stack(tmp_path_factory, fakes, env={"TIERGATE_API_KEYS": API_KEY})
