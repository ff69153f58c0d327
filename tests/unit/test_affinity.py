"""Conversation affinity: a floor per conversation, bounded and expiring."""

from __future__ import annotations

from types import SimpleNamespace

from gateway.affinity import AffinityStore, conversation_key


def _msgs(*texts: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(role="user" if i % 2 == 0 else "assistant", content=t) for i, t in enumerate(texts)]


def test_the_floor_only_rises() -> None:
    store = AffinityStore()
    store.record("c", 2)
    store.record("c", 0)
    assert store.floor("c") == 2 and store.floor("other") is None and store.floor(None) is None


def test_entries_expire_and_the_store_is_bounded() -> None:
    now = [0.0]
    store = AffinityStore(max_entries=2, ttl_s=10.0, clock=lambda: now[0])
    store.record("a", 1)
    store.record("b", 1)
    store.record("c", 1)
    assert len(store) == 2 and store.floor("a") is None
    now[0] = 11.0
    assert store.floor("b") is None


def test_keys_from_the_header_or_the_turns_so_far() -> None:
    assert conversation_key("abc", _msgs("hi")) == "id:abc"
    assert conversation_key(None, _msgs("hi")) is None
    two = conversation_key(None, _msgs("hi", "hello", "and then?"))
    assert two == conversation_key(None, _msgs("hi", "hello", "something else"))
    assert two != conversation_key(None, _msgs("hey", "hello", "and then?"))
