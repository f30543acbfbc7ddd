"""A `KeyProvider` whose key-encryption keys live in a PKCS#11 token (an HSM, or SoftHSM).

The KEKs are AES-256 secret keys generated inside the token, sensitive and not extractable:
the server never sees their bytes. A data key is wrapped by AES-256-GCM run by the token,
with the data key's id as associated data, in the same layout as the local key ring's
(`format | kek id (8 bytes) | nonce | ciphertext and tag`, crypto/keyring.py), so
datakeys.db and the stores do not know which provider wrapped it. Blind-index keys are
HMAC-SHA-256 computed by the token under a generic secret key ("index root"), once per
parameter (the digests are then computed in process: crypto/blind.py).

Objects in the token, told apart by label:
- `fhir-server kek active <instant>`: the KEK new keys are wrapped under (CKA_ID: its id);
- `fhir-server kek retired <instant>`: older KEKs, unwrap only, until `destroy`;
- `fhir-server index root`.

A rotation makes a new active KEK then relabels the older one; were it cut in between, the
newest active one is used and the other counts as retired. Errors name the token and key
ids, never key bytes or the PIN.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import PKCS11Error, UserAlreadyLoggedIn
from pkcs11.mechanisms import GCMParams

from .. import clock
from .keyring import KEY_BYTES, KeyRingError, KeyRingStatus, refuse_active

_FORMAT = 1
_KEK_ID_BYTES = 8
_NONCE_BYTES = 12
_WRAPPED_BYTES = 1 + _KEK_ID_BYTES + _NONCE_BYTES + KEY_BYTES + 16
_ACTIVE = "fhir-server kek active "
_RETIRED = "fhir-server kek retired "
_INDEX_ROOT = "fhir-server index root"
_HIDDEN = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.TOKEN: True}


class Pkcs11KeyRing:
    """The KEKs of token `token` (its label) in the PKCS#11 library `module`, logged in with
    the PIN in `pin_file` (owner-only). KeyRingError if any of it is unusable. Thread-safe:
    the one session is used by one thread at a time."""

    def __init__(self, module: Path, token: str, pin_file: Path, *, create: bool = False) -> None:
        """`create`: make the token's first KEK and index root (`keys init`), refusing a
        token that already holds them."""
        self.where = f"PKCS#11 token {token!r} ({module})"
        try:
            found = pkcs11.lib(str(module)).get_token(token_label=token)
            try:
                self._session = found.open(rw=True, user_pin=_pin(pin_file))
            except UserAlreadyLoggedIn:  # a login is the process's: another session did it
                self._session = found.open(rw=True)
        except (PKCS11Error, RuntimeError, OSError) as error:
            raise KeyRingError(f"cannot open the {self.where}: {type(error).__name__}") from None
        self._lock = threading.Lock()
        if create:
            if self._objects():
                raise KeyRingError(f"the {self.where} already holds fhir-server keys; left unchanged")
            self._call(self._session.generate_key, KeyType.GENERIC_SECRET, 8 * KEY_BYTES,
                       label=_INDEX_ROOT, store=True, capabilities=MechanismFlag.SIGN, template=_HIDDEN)
            self._new_kek()
        self._load()

    # -- KeyProvider -------------------------------------------------------------------------

    def wrap(self, key: bytes, context: bytes) -> bytes:
        with self._lock:
            kek_id = self._active
            nonce = os.urandom(_NONCE_BYTES)
            sealed = self._call(self._keks[kek_id].encrypt, key, mechanism=Mechanism.AES_GCM,
                                mechanism_param=GCMParams(nonce, context))
        return bytes((_FORMAT,)) + bytes.fromhex(kek_id) + nonce + sealed

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        kek_id = self.kek_of(wrapped)
        with self._lock:
            if kek_id not in self._keks:
                self._load()  # another process may have rotated
            kek = self._keks.get(kek_id)
            if kek is None:
                raise KeyRingError(f"key-encryption key {kek_id} is not in the {self.where}")
            start = 1 + _KEK_ID_BYTES
            try:
                return bytes(kek.decrypt(wrapped[start + _NONCE_BYTES:], mechanism=Mechanism.AES_GCM,
                                         mechanism_param=GCMParams(wrapped[start:start + _NONCE_BYTES],
                                                                   context)))
            except PKCS11Error:
                self._load()  # destroyed by another process since we listed it?
                if kek_id not in self._keks:
                    raise KeyRingError(f"key-encryption key {kek_id} is not in the {self.where}") from None
                raise KeyRingError("a wrapped data key does not authenticate") from None

    def kek_of(self, wrapped: bytes) -> str:
        if len(wrapped) != _WRAPPED_BYTES or wrapped[0] != _FORMAT:
            raise KeyRingError("a wrapped data key has an unknown format")
        return wrapped[1:1 + _KEK_ID_BYTES].hex()

    def rotate(self) -> str:
        with self._lock:
            self._load()
            older = [self._keks[self._active]]
            kek_id = self._new_kek()
            for kek in older:
                self._call(kek.__setitem__, Attribute.LABEL, _RETIRED + clock.instant())
            self._load()
        return kek_id

    def destroy(self, kek_id: str) -> None:
        with self._lock:
            self._load()
            refuse_active(kek_id, self._active)
            if (kek := self._keks.pop(kek_id, None)) is not None:
                self._call(kek.destroy)

    def status(self) -> KeyRingStatus:
        with self._lock:
            self._load()
            return KeyRingStatus(self.where, self._active, tuple(sorted(self._keks)), dict(self._retired))

    def index_key(self, param: str) -> bytes:
        with self._lock:
            return bytes(self._call(self._index_root.sign, b"blind-index\x00" + param.encode(),
                                    mechanism=Mechanism.SHA256_HMAC))

    def close(self) -> None:
        with self._lock:
            self._session.close()

    # -- inside --------------------------------------------------------------------------------

    def _objects(self) -> list[Any]:
        return [o for o in self._session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})
                if str(o[Attribute.LABEL]).startswith(("fhir-server kek ", _INDEX_ROOT))]

    def _load(self) -> None:
        """Read the token's KEKs: the newest active one is active, every other is retired."""
        try:
            found = self._objects()
        except PKCS11Error as error:
            raise KeyRingError(f"cannot list the keys of the {self.where}: {type(error).__name__}") from None
        keks: dict[str, tuple[str, Any]] = {}
        roots = []
        for obj in found:
            label = str(obj[Attribute.LABEL])
            if label == _INDEX_ROOT:
                roots.append(obj)
            else:
                keks[bytes(obj[Attribute.ID]).hex()] = (label, obj)
        active = sorted((label.removeprefix(_ACTIVE), kek_id) for kek_id, (label, _) in keks.items()
                        if label.startswith(_ACTIVE))
        if not active or len(roots) != 1:
            raise KeyRingError(f"the {self.where} holds no fhir-server key ring; create one with "
                               "`fhir-server keys init`")
        self._active = active[-1][1]
        self._keks = {kek_id: obj for kek_id, (_, obj) in keks.items()}
        self._retired = {kek_id: datetime.fromisoformat(label.rpartition(" ")[2])
                         for kek_id, (label, _) in keks.items() if kek_id != self._active}
        self._index_root = roots[0]

    def _new_kek(self) -> str:
        kek_id = os.urandom(_KEK_ID_BYTES)
        self._call(self._session.generate_key, KeyType.AES, 8 * KEY_BYTES, id=kek_id,
                   label=_ACTIVE + clock.instant(), store=True,
                   capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT, template=_HIDDEN)
        return kek_id.hex()

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except PKCS11Error as error:
            raise KeyRingError(f"the {self.where} refused an operation: {type(error).__name__}") from None


def _pin(pin_file: Path) -> str:
    """The PIN in `pin_file`, which must be owner-only (a PIN is never a flag or a variable:
    both show in process listings)."""
    try:
        if pin_file.stat().st_mode & 0o077:
            raise KeyRingError(f"the PKCS#11 PIN file {pin_file} is readable or writable by group "
                               f"or others; run `chmod 600 {pin_file}`")
        return pin_file.read_text().strip()
    except OSError as error:
        raise KeyRingError(f"the PKCS#11 PIN file {pin_file} cannot be read ({error.strerror})") from None
