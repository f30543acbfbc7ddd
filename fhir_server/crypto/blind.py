"""Blind-index digests: keyed HMAC-SHA-256 tokens that stand for protected search values.

A database reader sees `digest(param, domain, text)` instead of `text`: equal texts of one
parameter give equal tokens, different parameters give unrelated ones (each has its own key),
and without the key a token cannot be computed from a guess. What the tokens still reveal
(equality, prefix frequencies, value lengths) is in docs/blind-indexes.md.

Tokens are the first 16 bytes of the MAC (128 bits: collisions need ~2^64 values), written as
22 characters of unpadded base64url. Every token has the same length, so "a stored token
starts with the searched token" — the stores' string match — holds exactly when they are equal.

The key of a parameter comes from a callable `param -> bytes` (the key ring's
`index_key`); `search/blind.py` decides which values are digested and how queries follow.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from hashlib import sha256
from typing import Any

IndexKey = Callable[[str], bytes]
TOKEN_BYTES = 16
TOKEN_LENGTH = 22  # len(base64url(16 bytes)) without padding
MIN_KEY_BYTES = 32


class BlindDigest:
    """`digest(param, domain, text)`: the blind token of `text` under `param`'s key.

    `domain` separates the kinds of token one parameter holds (a prefix, an exact value, a
    code), so a token of one kind never matches a search of another. Keys are fetched once
    per parameter and kept as prepared HMAC states (copying one is cheaper than a new HMAC).
    """

    def __init__(self, index_key: IndexKey) -> None:
        self._index_key = index_key
        self._states: dict[str, Any] = {}

    def _state(self, param: str) -> Any:
        state = self._states.get(param)
        if state is None:
            key = self._index_key(param)
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"the blind-index key of {param} is shorter than {MIN_KEY_BYTES} bytes")
            state = self._states[param] = hmac.new(key, digestmod=sha256)
        return state

    def __call__(self, param: str, domain: str, text: str) -> str:
        mac = self._state(param).copy()
        mac.update(f"{len(domain)}:{domain}\x00{text}".encode())  # length first: unambiguous
        return base64.urlsafe_b64encode(mac.digest()[:TOKEN_BYTES]).rstrip(b"=").decode("ascii")
