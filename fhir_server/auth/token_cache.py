"""Verified access tokens, remembered until they expire: a client sends the same token with
every request, and checking its signature and claims cost more than the rest of a read
(docs/performance.md, issue 15).

An entry is keyed by the SHA-256 of the token, never the token itself: the cache holds no
bearer credential, and a lookup compares digests of what the caller sent, not secrets. It
lives until the token's expiry (plus the leeway verification allows), and every entry is
dropped when the verification keys change (a key withdrawn takes its tokens with it).
Revocation is not cached: the token service asks the registry on every use. The cache is
bounded: past `size` entries the least recently used goes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

Claims = TypeVar("Claims")

SIZE = 4096  # tokens in use at once per worker; more are verified again, not refused


class TokenCache(Generic[Claims]):
    """At most `size` verified tokens, each with what verification said of it."""

    def __init__(self, size: int = SIZE, now: Callable[[], float] = time.time) -> None:
        self.size = size
        self.now = now
        self._entries: OrderedDict[bytes, tuple[float, Claims]] = OrderedDict()
        self._keys: object = None
        self._lock = threading.Lock()  # external issuers' tokens are verified in threads

    def get(self, token: str, keys: object) -> Claims | None:
        """What verifying `token` with `keys` said, if it was verified with these very keys
        and has not expired since; None otherwise."""
        digest = _digest(token)
        with self._lock:
            if keys is not self._keys:
                self._entries.clear()
                self._keys = keys
                return None
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if self.now() >= entry[0]:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry[1]

    def put(self, token: str, keys: object, claims: Claims, until: float) -> None:
        """Remember that `token`, verified with `keys`, says `claims` until `until` (epoch s)."""
        digest = _digest(token)
        with self._lock:
            if keys is not self._keys:
                self._entries.clear()
                self._keys = keys
            self._entries[digest] = (until, claims)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
