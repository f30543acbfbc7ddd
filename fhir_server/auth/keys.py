"""The server's token signing keys: generated, persisted, rotated, published as a JWKS.

Keys are RSA (RS256, which every SMART client library verifies) and live in one JSON file of
private JWKs (mode 0600) in the data directory, so every worker process signs and verifies
with the same set. The newest key signs. A rotated-out key stays published until every token
it signed has expired, then disappears from the JWKS (SMART App Launch: key rotation).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from joserfc.jwk import KeySet, RSAKey

ALGORITHM = "RS256"
_RELOAD_SECONDS = 5.0  # how stale a worker's view of the key file may get


@dataclass(frozen=True, slots=True)
class _Entry:
    key: RSAKey
    created: float
    retired: float | None  # when a newer key took over signing


class SigningKeys:
    """The key file at `path`, re-read when another process (the CLI) has rotated it."""

    def __init__(self, path: Path, token_lifetime: int) -> None:
        self.path = path
        self.token_lifetime = token_lifetime
        self._entries: list[_Entry] = []
        self._mtime = 0.0
        self._checked = 0.0
        self._lock = threading.Lock()
        self._public: tuple[tuple[str | None, ...], KeySet] | None = None

    def _load(self) -> None:
        now = time.monotonic()
        if self._entries and now - self._checked < _RELOAD_SECONDS:
            return
        with self._lock:
            self._checked = now
            if not self.path.exists():
                self._create()
            mtime = self.path.stat().st_mtime
            if mtime != self._mtime or not self._entries:
                raw = orjson.loads(self.path.read_bytes())
                self._entries = [_Entry(_imported(orjson.dumps(e["jwk"], option=orjson.OPT_SORT_KEYS)),
                                        e["created"], e["retired"]) for e in raw["keys"]]
                self._mtime = mtime

    def _create(self) -> None:
        """The first key, unless another process made the file first (both may try: only one
        hard link to the file's name can succeed, and then everyone reads that file)."""
        temporary = self._temporary([_Entry(_new_key(), time.time(), None)])
        try:
            os.link(temporary, self.path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)

    def _write(self, entries: list[_Entry]) -> None:
        os.replace(self._temporary(entries), self.path)
        self._entries, self._mtime = entries, self.path.stat().st_mtime

    def _temporary(self, entries: list[_Entry]) -> Path:
        """`entries` written to a private file beside the key file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"keys": [{"jwk": e.key.as_dict(private=True), "created": e.created,
                          "retired": e.retired} for e in entries]}
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.{time.monotonic_ns()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(data))
            out.flush()
            os.fsync(out.fileno())
        return temporary

    def signing_key(self) -> RSAKey:
        """The key that signs new tokens (the newest)."""
        self._load()
        return self._entries[-1].key

    def _published(self) -> list[RSAKey]:
        self._load()
        horizon = time.time() - self.token_lifetime
        return [e.key for e in self._entries if e.retired is None or e.retired > horizon]

    def verification_keys(self) -> KeySet:
        """Public keys that may have signed a token still valid (built once per key set and
        retirement horizon, not on every request: it is on the path of every API call)."""
        published = self._published()
        kids = tuple(k.kid for k in published)
        if self._public is None or self._public[0] != kids:
            self._public = (kids, KeySet([RSAKey.import_key(k.as_dict(private=False))
                                          for k in published]))
        return self._public[1]

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set served at the jwks_uri."""
        return {"keys": [{**k.as_dict(private=False), "use": "sig", "alg": ALGORITHM}
                         for k in self._published()]}

    def rotate(self) -> str:
        """Start signing with a new key; returns its kid. Keys past their use are dropped."""
        self._load()
        now = time.time()
        horizon = now - self.token_lifetime
        kept = [e if e.retired is not None else _Entry(e.key, e.created, now)
                for e in self._entries if e.retired is None or e.retired > horizon]
        fresh = _Entry(_new_key(), now, None)
        with self._lock:
            self._write([*kept, fresh])
        return str(fresh.key.kid)


@functools.lru_cache(maxsize=16)
def _imported(jwk: bytes) -> RSAKey:
    """The key of a private JWK. Importing checks the RSA key, ~30 ms of CPU: once per key in a
    process, not again at each re-read of the file after a rotation (on a request's path) nor
    in each reader of the file (an app, a command)."""
    return RSAKey.import_key(orjson.loads(jwk))


def _new_key() -> RSAKey:
    return RSAKey.generate_key(2048, private=True, auto_kid=True)
