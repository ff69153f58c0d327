"""Real processes on free loopback ports: fake tiers (`tiergate fake-upstream`) behind a gateway."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.procs import fake_upstream, gateway, write_profile

API_KEY = "sk-test-0123456789"


@dataclass
class Stack:
    base_url: str
    fakes: dict[str, str]  # tier name -> fake base URL

    def client(self, api_key: str = "unused", **kw: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, **kw)  # type: ignore[arg-type]


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
        yield Stack(stack.enter_context(gateway(path)), fakes)


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
        yield Stack(stack.enter_context(gateway(path)), fakes)


@pytest.fixture(scope="session")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway whose API key comes from the environment."""
    with ExitStack() as stack:
        url = stack.enter_context(fake_upstream())
        fakes = {"small": url, "medium": url, "large": url}
        path = Path(tmp_path_factory.mktemp("keyed")) / "profile.yaml"
        write_profile(path, "test-fake", endpoints=fakes)
        yield Stack(stack.enter_context(gateway(path, env={"TIERGATE_API_KEYS": API_KEY})), fakes)
