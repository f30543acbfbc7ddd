"""The body codec: what a store calls to turn a stamped version body into its stored form
and back. The stores see only this port; keys, providers and formats stay behind it.

`seal` runs inside the store's unit of work once meta is stamped (the version is known);
`open` runs on every body a store reads. Which key: a resource in one patient's compartment
uses that patient's key; in several, the key of the patient whose id sorts first (one
deterministic answer, so every version of a resource with unchanged references uses the
same key; erasing another of its patients removes the resource itself: docs/security.md);
outside every compartment, its type's key.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from ..model.errors import FhirError, Kind, fail
from .datakeys import DataKeys, KeyDestroyed, patient_scope, type_scope
from .envelope import EnvelopeError, key_id_of, location, open_envelope, seal
from .keyring import KeyRingError


class BodyCodec(Protocol):
    """Turns stamped JSON bodies into stored blobs and back."""

    def seal(self, resource_type: str, id: str, version: int, body: bytes,
             patients: Collection[str]) -> bytes:
        """The stored form of `body`, version `version` of `resource_type/id`, whose patient
        compartments are `patients` (ids)."""

    def open(self, resource_type: str, id: str, version: int, stored: bytes) -> bytes:
        """The body `seal` was given. Raises UnreadableBody (a FAULT) if it cannot be opened."""


class UnreadableBody(FhirError):
    """A stored body that cannot be decrypted: tampered with, moved, or its key destroyed.
    The client sees a 500 naming the resource, never blob or key bytes."""


def unreadable(resource_type: str, id: str, version: int, why: str) -> UnreadableBody:
    issue = fail(Kind.FAULT, "exception",
                 f"The stored body of {resource_type}/{id}/_history/{version} cannot be "
                 f"decrypted ({why}).").issues
    return UnreadableBody(Kind.FAULT, issue)


def key_scope(resource_type: str, patients: Collection[str]) -> str:
    """The data key scope of a resource in the compartments of `patients`."""
    return patient_scope(min(patients)) if patients else type_scope(resource_type)


class PlainCodec:
    """Bodies stored as they are (encryption off)."""

    def seal(self, resource_type: str, id: str, version: int, body: bytes,
             patients: Collection[str]) -> bytes:
        return body

    def open(self, resource_type: str, id: str, version: int, stored: bytes) -> bytes:
        if stored[:1] != b"{":
            raise unreadable(resource_type, id, version, "it is encrypted and encryption is off")
        return stored


class EnvelopeCodec:
    """Bodies sealed with AES-256-GCM under their compartment's data key (crypto/envelope.py)."""

    def __init__(self, keys: DataKeys) -> None:
        self.keys = keys

    def seal(self, resource_type: str, id: str, version: int, body: bytes,
             patients: Collection[str]) -> bytes:
        key_id, cipher = self.keys.current(key_scope(resource_type, patients))
        return seal(cipher, key_id, location(resource_type, id, version), body)

    def open(self, resource_type: str, id: str, version: int, stored: bytes) -> bytes:
        try:
            cipher = self.keys.cipher(key_id_of(stored))
            return open_envelope(cipher, location(resource_type, id, version), stored)
        except KeyDestroyed:
            raise unreadable(resource_type, id, version, "its data key was destroyed") from None
        except (EnvelopeError, KeyRingError) as error:
            raise unreadable(resource_type, id, version, str(error)) from None
