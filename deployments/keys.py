"""API keys as a profile or Secret stores them: in clear, or as `sha256:<64 hex digits>`.

The gateway never needs a key in clear: it hashes what a caller presents and compares digests, so
a profile (or a Kubernetes Secret) may hold only hashes. `tiergate key hash` makes one. A key's id,
used in logs and metric labels, is the first 8 hex digits of its SHA-256, so a key and its hash
carry the same id.

Stdlib only: the CLI's `tiergate key hash` imports this and must stay fast.
"""

from __future__ import annotations

import hashlib
import re

HASH_PREFIX = "sha256:"
MIN_KEY_CHARS = 8
MIN_ADMIN_KEY_CHARS = 16
_HASH = re.compile(r"^sha256:[0-9a-fA-F]{64}$")
# What an `Authorization: Bearer` header carries safely, and what a comma-separated variable can hold.
_TOKEN = re.compile(r"^[\x21-\x2b\x2d-\x7e]+$")


def hash_key(key: str) -> str:
    """The stored form of a key: `sha256:` and the hex SHA-256 of its UTF-8 bytes."""
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def key_id(key: str) -> str:
    """A stable, non-reversible id for logs and metrics: the first 8 hex digits of the key's SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def is_hashed(entry: str) -> bool:
    return entry.startswith(HASH_PREFIX)


def digest_of(entry: str) -> bytes:
    """The SHA-256 digest a stored entry stands for: read from a hash, computed from a key in clear."""
    if is_hashed(entry):
        return bytes.fromhex(entry[len(HASH_PREFIX) :])
    return hashlib.sha256(entry.encode()).digest()


def id_of_digest(digest: bytes) -> str:
    return digest.hex()[:8]


def key_rule_violation(entry: str, *, min_chars: int = MIN_KEY_CHARS) -> str | None:
    """Why `entry` cannot be a stored key, or None when it can. The reason never quotes the key."""
    if is_hashed(entry):
        if not _HASH.match(entry):
            return "a hashed key is 'sha256:' followed by 64 hex digits (make one with `tiergate key hash`)"
        return None
    if len(entry) < min_chars:
        return f"a key needs at least {min_chars} characters, this one has {len(entry)}"
    if not _TOKEN.match(entry):
        return "a key holds visible ASCII characters only, no spaces or commas"
    return None
