"""Key-encryption keys: the `KeyProvider` port and the local key-ring file behind it.

A provider wraps and unwraps data keys (crypto/datakeys.py) under its current key-encryption
key (KEK) and never hands a KEK out, so an HSM (PKCS#11), Vault's transit engine or a cloud KMS
can stand in for the local file without the stores noticing: they only see a codec. The local
key ring is one JSON file, owner-only (0600), kept apart from every database and backup:

    {"format": 1, "active": "<kek id>", "keks": {"<kek id>": "<base64 key>", ...},
     "index_root": "<base64 key>", "retired": {"<kek id>": "<instant it stopped being active>"}}

A rotation keeps the older KEKs as retired (they unwrap, never wrap): a backup archive's key,
wrapped when the archive was taken, stays openable until that archive ages out of the backup
retention; `keys prune` destroys them after that (docs/security.md).

A wrapped key is `format | kek id (8 bytes) | nonce | AES-256-GCM(kek, key, context)`; the
context (the data key's id) stops a wrapped key from being moved to another key's record.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .. import clock

_FORMAT = 1
_KEK_ID_BYTES = 8
_NONCE_BYTES = 12
KEY_BYTES = 32


class KeyRingError(Exception):
    """The key ring cannot be used: missing, unreadable, malformed, too open, or a wrapped key
    it cannot unwrap. Messages name files and key ids, never key bytes."""


@dataclass(frozen=True, slots=True)
class KeyRingStatus:
    """What `keys status` shows: the active KEK, every KEK still held, where they live, and
    when each retired one stopped being active."""

    provider: str
    active: str
    keks: tuple[str, ...]
    retired: dict[str, datetime] = field(default_factory=dict)


class KeyProvider(Protocol):
    """Holds the key-encryption keys. Implementations must be safe to call from threads."""

    def wrap(self, key: bytes, context: bytes) -> bytes:
        """`key` encrypted under the active KEK, bound to `context`."""

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """The key `wrap` was given; KeyRingError if its KEK is gone or it was tampered with."""

    def kek_of(self, wrapped: bytes) -> str:
        """The id of the KEK a wrapped key is under (to find keys to re-wrap)."""

    def rotate(self) -> str:
        """Make a new KEK the active one (older ones stay, retired: they still unwrap);
        returns its id."""

    def destroy(self, kek_id: str) -> None:
        """Forget a KEK that is no longer active (after every key under it was re-wrapped)."""

    def status(self) -> KeyRingStatus:
        """The active KEK and the KEKs held."""

    def index_key(self, param: str) -> bytes:
        """The HMAC key of the blind index of search parameter `param` (e.g. `Patient.name`)."""


def refuse_active(kek_id: str, active: str) -> None:
    """KeyRingError if `kek_id` is the active KEK: only retired ones may be destroyed."""
    if kek_id == active:
        raise KeyRingError(f"key-encryption key {kek_id} is the active one")


def create_key_ring(path: Path) -> None:
    """Write a new key ring at `path` (0600); refuses to overwrite one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kek_id = os.urandom(_KEK_ID_BYTES).hex()
    content = {"format": _FORMAT, "active": kek_id, "keks": {kek_id: _b64(os.urandom(KEY_BYTES))},
               "index_root": _b64(os.urandom(KEY_BYTES))}
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyRingError(f"a key ring already exists at {path}; it was left unchanged") from None
    with os.fdopen(fd, "w") as file:
        json.dump(content, file)
        file.flush()
        os.fsync(file.fileno())


class LocalKeyRing:
    """The key ring file at `path` (a KeyProvider). Loading checks it; KeyRingError if unusable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        self._seen = _identity(self.path)
        self._active, self._keks, self._index_root, self._retired = _read(self.path)
        self._ciphers = {kek_id: AESGCM(key) for kek_id, key in self._keks.items()}

    def wrap(self, key: bytes, context: bytes) -> bytes:
        with self._lock:
            if _identity(self.path) != self._seen:  # rotated by another process: its new KEK
                self._load()
            kek_id, cipher = self._active, self._ciphers[self._active]
        nonce = os.urandom(_NONCE_BYTES)
        return bytes((_FORMAT,)) + bytes.fromhex(kek_id) + nonce + cipher.encrypt(nonce, key, context)

    def kek_of(self, wrapped: bytes) -> str:
        if len(wrapped) != 1 + _KEK_ID_BYTES + _NONCE_BYTES + KEY_BYTES + 16 or wrapped[0] != _FORMAT:
            raise KeyRingError("a wrapped data key has an unknown format")
        return wrapped[1:1 + _KEK_ID_BYTES].hex()

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        kek_id = self.kek_of(wrapped)
        with self._lock:
            if kek_id not in self._ciphers:
                self._load()  # another process may have rotated the ring since we read it
            cipher = self._ciphers.get(kek_id)
        if cipher is None:
            raise KeyRingError(f"key-encryption key {kek_id} is not in the key ring {self.path}")
        start = 1 + _KEK_ID_BYTES
        try:
            return cipher.decrypt(wrapped[start:start + _NONCE_BYTES],
                                  wrapped[start + _NONCE_BYTES:], context)
        except InvalidTag:
            raise KeyRingError("a wrapped data key does not authenticate") from None

    def rotate(self) -> str:
        with self._lock:
            self._load()
            kek_id = os.urandom(_KEK_ID_BYTES).hex()
            self._keks[kek_id] = os.urandom(KEY_BYTES)
            self._retired[self._active] = clock.instant()
            self._active = kek_id
            self._save()
        return kek_id

    def destroy(self, kek_id: str) -> None:
        with self._lock:
            self._load()
            refuse_active(kek_id, self._active)
            self._retired.pop(kek_id, None)
            if self._keks.pop(kek_id, None) is not None:
                self._save()

    def status(self) -> KeyRingStatus:
        with self._lock:
            self._load()
            retired = {kek_id: datetime.fromisoformat(at) for kek_id, at in self._retired.items()}
            return KeyRingStatus(f"local file {self.path}", self._active,
                                 tuple(sorted(self._keks)), retired)

    def index_key(self, param: str) -> bytes:
        # Derived, unlike data keys: an index key is never destroyed on its own.
        return hmac.new(self._index_root, b"blind-index\x00" + param.encode(), hashlib.sha256).digest()

    def _save(self) -> None:
        """Replace the file atomically (a crash leaves the old ring or the new one)."""
        content = {"format": _FORMAT, "active": self._active,
                   "keks": {kek_id: _b64(key) for kek_id, key in self._keks.items()},
                   "index_root": _b64(self._index_root), "retired": self._retired}
        spare = self.path.with_name(self.path.name + ".new")
        fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(content, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(spare, self.path)
        self._ciphers = {kek_id: AESGCM(key) for kek_id, key in self._keks.items()}


def _identity(path: Path) -> tuple[int, int]:
    """Which version of the file is there (a rotation replaces it: a new inode)."""
    try:
        found = path.stat()
    except OSError:
        return (0, 0)
    return (found.st_ino, found.st_mtime_ns)


def _read(path: Path) -> tuple[str, dict[str, bytes], bytes, dict[str, str]]:
    """(active KEK id, KEKs by id, index root key, retirement instants by KEK id) of the
    file, checked."""
    hint = "create one with `fhir-server keys init`, or point FHIR_SERVER_KEY_RING at it"
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyRingError(f"the key ring {path} does not exist; {hint}") from None
    except OSError as error:
        raise KeyRingError(f"the key ring {path} cannot be read ({error.strerror})") from None
    if not stat.S_ISREG(mode):
        raise KeyRingError(f"the key ring {path} is not a regular file")
    if mode & 0o077:
        raise KeyRingError(f"the key ring {path} is readable or writable by group or others "
                           f"(mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}`")
    try:
        content: Any = json.loads(raw)
        if content.get("format") != _FORMAT:
            raise ValueError("unknown format")
        keks = {str(kek_id): _key(value) for kek_id, value in content["keks"].items()}
        active = str(content["active"])
        if active not in keks or any(len(bytes.fromhex(k)) != _KEK_ID_BYTES for k in keks):
            raise ValueError("bad key ids")
        retired = {str(k): str(v) for k, v in content.get("retired", {}).items()
                   if k in keks and k != active}
        for instant in retired.values():
            datetime.fromisoformat(instant)
        for kek_id in keks.keys() - retired.keys() - {active}:
            # A ring written before retirement times were kept: from now, so such a KEK
            # stays a whole retention (never pruned too early).
            retired[kek_id] = clock.instant()
        return active, keks, _key(content["index_root"]), retired
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KeyRingError(f"the key ring {path} is malformed") from None


def _key(value: Any) -> bytes:
    key = base64.b64decode(str(value), validate=True)
    if len(key) != KEY_BYTES:
        raise ValueError("a key of the wrong length")
    return key


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()
