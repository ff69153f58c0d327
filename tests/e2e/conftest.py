"""Real processes on free loopback ports: fake tiers (`tiergate fake-upstream`) behind a gateway."""

from __future__ import annotations

from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Three working fake tiers; small tokens arrive with a little delay so streams are real streams."""
    with ExitStack() as stack:
        fakes = {
            "small": stack.enter_context(fake_upstream("--token-delay-ms", "1")),
            "medium": stack.enter_context(fake_upstream()),
            "large": stack.enter_context(fake_upstream("--reply-tokens", "24")),
        }
        path = Path(tmp_path_factory.mktemp("healthy")) / "profile.yaml"
        write_profile(path, "test-fake", endpoints=fakes, gateway={"max_body_bytes": 65536})
        yield from _serve(Stack(stack.enter_context(gateway(path)), fakes))


@pytest.fixture(scope="session")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """small always fails (500), medium answers too late, large enforces a small context window."""
    with ExitStack() as stack:
        fakes = {
            "small": stack.enter_context(fake_upstream("--failure-rate", "1")),
            "medium": stack.enter_context(fake_upstream("--ttft-ms", "5000")),
            "large": stack.enter_context(fake_upstream("--max-context-tokens", "64")),
        }
        path = Path(tmp_path_factory.mktemp("faulty")) / "profile.yaml"
        write_profile(path, "test-fake", endpoints=fakes, gateway={"request_timeout_s": 1.0})
        yield from _serve(Stack(stack.enter_context(gateway(path)), fakes))


@pytest.fixture(scope="session")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway whose API key comes from the environment."""
    with ExitStack() as stack:
        url = stack.enter_context(fake_upstream())
        fakes = {"small": url, "medium": url, "large": url}
        path = Path(tmp_path_factory.mktemp("keyed")) / "profile.yaml"
        write_profile(path, "test-fake", endpoints=fakes)
        yield from _serve(Stack(stack.enter_context(gateway(path, env={"TIERGATE_API_KEYS": API_KEY})), fakes))


def _serve(stack: Stack) -> Iterator[Stack]:
    try:
        yield stack
    finally:
        stack.close()
