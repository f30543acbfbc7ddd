"""Blind-index digests: keyed HMAC-SHA-256 tokens that stand for protected search values.

A database reader sees `digest(param, domain, text)` instead of `text`: equal texts of one
parameter give equal tokens, different parameters give unrelated ones (each has its own key),
and without the key a token cannot be computed from a guess. What the tokens still reveal
(equality, prefix frequencies, value lengths) is in docs/blind-indexes.md.

Tokens are the first 16 bytes of the MAC (128 bits: collisions need ~2^64 values), written as
22 characters of unpadded base64url. A chain (`chain`) is the 48-bit heads of the MACs of a
text's prefixes, end to end: fixed-width links, so the stores' string match ("a stored chain
starts with the searched chain") is start-with on the texts. A domain is either tokens' or
chains' (search/blind.py), never both: a chain's first link is the head of a token.

The key of a parameter comes from a callable `param -> bytes` (the key ring's
`index_key`); `search/blind.py` decides which values are digested and how queries follow.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from functools import lru_cache
from hashlib import sha256
from typing import Any

IndexKey = Callable[[str], bytes]
TOKEN_BYTES = 16
TOKEN_LENGTH = 22  # len(base64url(16 bytes)) without padding
LINK_BYTES = 6  # a prefix's link in a chain: 48 bits, 8 base64url characters, never padded
LINK_LENGTH = 8
MIN_KEY_BYTES = 32
_BLOCK = 64  # SHA-256's block size
_INNER = bytes(b ^ 0x36 for b in range(256))  # RFC 2104 ipad, as a translation table
_OUTER = bytes(b ^ 0x5C for b in range(256))  # opad


class BlindDigest:
    """`digest(param, domain, text)`: the blind token of `text` under `param`'s key.

    `domain` separates the kinds of token one parameter holds (a prefix, an exact value, a
    code), so a token of one kind never matches a search of another. The MAC is HMAC-SHA-256
    (RFC 2104) computed from the key's inner and outer pad states, prepared once per parameter;
    the inner state is also advanced over each domain's header once, so a token costs one copy,
    the text and two SHA-256 finalisations (~0.5 µs of CPU here, against ~1.4 µs for
    `hmac.digest`, which keys OpenSSL again at every call). Recent tokens are cached: names and
    short prefixes repeat across resources, and the process holds these values anyway.
    """

    def __init__(self, index_key: IndexKey, cache_size: int = 1 << 14) -> None:
        self._index_key = index_key
        self._pads: dict[str, tuple[Any, Any]] = {}
        self._heads: dict[tuple[str, str], tuple[Any, Any]] = {}  # (param, domain) -> states
        self._token = lru_cache(maxsize=cache_size)(self._compute)
        self._chain = lru_cache(maxsize=cache_size)(self._links)

    def __call__(self, param: str, domain: str, text: str) -> str:
        return self._token(param, domain, text)

    def chain(self, param: str, domain: str, text: str) -> str:
        """The links of `text`'s prefixes, one per prefix that does not end in a space.

        A link is the first 6 bytes of the prefix's MAC (the first 8 characters of its token
        under `domain`), so the chain of a prefix of `text` is a prefix of `text`'s chain, and
        a stored chain starts with a searched one exactly when its value starts with the
        searched value (but with the chance, about 2^-48 per sibling prefix, that a link
        collides: docs/blind-indexes.md). One chain replaces one index row per prefix.
        """
        return self._chain(param, domain, text)

    def _pad_states(self, param: str) -> tuple[Any, Any]:
        pads = self._pads.get(param)
        if pads is None:
            key = self._index_key(param)
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"the blind-index key of {param} is shorter than {MIN_KEY_BYTES} bytes")
            if len(key) > _BLOCK:
                key = sha256(key).digest()  # RFC 2104: a key longer than a block is hashed first
            key = key.ljust(_BLOCK, b"\x00")
            pads = self._pads[param] = (sha256(key.translate(_INNER)), sha256(key.translate(_OUTER)))
        return pads

    def _head_states(self, param: str, domain: str) -> tuple[Any, Any]:
        """The inner state after the domain's header, and the outer pad state."""
        head = self._heads.get((param, domain))
        if head is None:
            inner_pad, outer_pad = self._pad_states(param)
            inner = inner_pad.copy()
            inner.update(f"{len(domain)}:{domain}\x00".encode())  # length first: unambiguous
            head = self._heads[param, domain] = (inner, outer_pad)
        return head

    def _compute(self, param: str, domain: str, text: str) -> str:
        head, outer_pad = self._head_states(param, domain)
        inner = head.copy()
        inner.update(text.encode())
        outer = outer_pad.copy()
        outer.update(inner.digest())
        return base64.urlsafe_b64encode(outer.digest()[:TOKEN_BYTES]).rstrip(b"=").decode("ascii")

    def _links(self, param: str, domain: str, text: str) -> str:
        head, outer_pad = self._head_states(param, domain)
        inner = head.copy()
        links = bytearray()
        for char in text:
            inner.update(char.encode())  # the state after each prefix, advanced once per char
            if char != " ":
                outer = outer_pad.copy()
                outer.update(inner.copy().digest())
                links += outer.digest()[:LINK_BYTES]
        return base64.urlsafe_b64encode(links).decode("ascii")
