"""The body codec: what a store calls to turn a stamped version body into its stored form
and back. The stores see only this port; keys, providers and formats stay behind it.

`seal` runs inside the store's unit of work once meta is stamped (the version is known);
`open` runs on every body a store reads. Which key: a resource in one patient's compartment
uses that patient's key; in several, the key of the patient whose id sorts first (one
deterministic answer, so every version of a resource with unchanged references uses the
same key; the erasure of any other of its patients must remove the resource, since their
key does not cover it: docs/security.md);
outside every compartment, its type's key.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Protocol

from .datakeys import DataKeys, KeyDestroyed, patient_scope, type_scope
from .envelope import EnvelopeError, is_envelope, key_id_of, location, open_envelope, seal
from .keyring import KeyRingError


class BodyCodec(Protocol):
    """Turns stamped JSON bodies into stored blobs and back."""

    def seal(self, resource_type: str, id: str, version: int, body: bytes,
             patients: Collection[str]) -> bytes:
        """The stored form of `body`, version `version` of `resource_type/id`, whose patient
        compartments are `patients` (ids)."""

    def open(self, resource_type: str, id: str, version: int, stored: bytes) -> bytes:
        """The body `seal` was given. Raises UnreadableBody if it cannot be opened."""

    def prepare(self, resources: Iterable[tuple[str, Collection[str]]]) -> None:
        """Get ready to seal resources of these (type, patients) soon, outside any lock the
        caller's store holds if it can (making new data keys writes and syncs a file)."""

    def ready(self, stored: Iterable[bytes]) -> None:
        """Get ready to open these stored blobs soon (a page of them: their keys fetched
        together, not one look-up each)."""


class UnreadableBody(Exception):
    """A stored body that cannot be decrypted: tampered with, moved, or (`destroyed`) its data
    key destroyed by an erasure. Not a client's error: the server answers 500 with an incident
    id and logs this message, which names the version, never blob or key bytes."""

    def __init__(self, resource_type: str, id: str, version: int, why: str,
                 destroyed: bool = False) -> None:
        super().__init__(f"The stored body of {resource_type}/{id}/_history/{version} cannot "
                         f"be decrypted ({why}).")
        self.destroyed = destroyed


def patient_key_ids(codec: BodyCodec, patient_id: str) -> frozenset[bytes]:
    """The ids of every data key (retired ones too) that seals versions about `patient_id`:
    an erasure removes what they sealed wherever it lies, in the compartment or not."""
    if not isinstance(codec, EnvelopeCodec):
        return frozenset()
    return frozenset(codec.keys.keys_of(patient_scope(patient_id), retired=True))


def key_scope(resource_type: str, patients: Collection[str]) -> str:
    """The data key scope of a resource in the compartments of `patients`."""
    return patient_scope(min(patients)) if patients else type_scope(resource_type)


class PlainCodec:
    """Bodies stored as they are (encryption off)."""

    def seal(self, resource_type: str, id: str, version: int, body: bytes,
             patients: Collection[str]) -> bytes:
        return body

    def open(self, resource_type: str, id: str, version: int, stored: bytes) -> bytes:
        if is_envelope(stored):
            raise UnreadableBody(resource_type, id, version, "it is encrypted and encryption is off")
        return stored

    def prepare(self, resources: Iterable[tuple[str, Collection[str]]]) -> None:
        return None

    def ready(self, stored: Iterable[bytes]) -> None:
        return None


class EnvelopeCodec:
    """Bodies sealed with AES-256-GCM under their compartment's data key (crypto/envelope.py)."""

    def __init__(self, keys: DataKeys) -> None:
        self.keys = keys

    def prepare(self, resources: Iterable[tuple[str, Collection[str]]]) -> None:
        self.keys.prepare(key_scope(resource_type, patients) for resource_type, patients in resources)

    def ready(self, stored: Iterable[bytes]) -> None:
        self.keys.fetch({key_id_of(blob) for blob in stored if is_envelope(blob)})

    def seal(self, resource_type: str, id: str, version: int, body: bytes,
             patients: Collection[str]) -> bytes:
        key_id, cipher = self.keys.current(key_scope(resource_type, patients))
        return seal(cipher, key_id, location(resource_type, id, version), body)

    def open(self, resource_type: str, id: str, version: int, stored: bytes) -> bytes:
        try:
            cipher = self.keys.cipher(key_id_of(stored))
            return open_envelope(cipher, location(resource_type, id, version), stored)
        except KeyDestroyed:
            raise UnreadableBody(resource_type, id, version, "its data key was destroyed",
                                 destroyed=True) from None
        except (EnvelopeError, KeyRingError) as error:
            raise UnreadableBody(resource_type, id, version, str(error)) from None

    def reseal(self, scope: str, stale: Collection[bytes], resource_type: str, id: str,
               version: int, stored: bytes) -> bytes | None:
        """`stored` sealed again under the current key of `scope` if one of the `stale` keys
        sealed it, else None (data-key rotation, store/rekey.py)."""
        if key_id_of(stored) not in stale:
            return None
        body = self.open(resource_type, id, version, stored)
        key_id, cipher = self.keys.current(scope)
        return seal(cipher, key_id, location(resource_type, id, version), body)
