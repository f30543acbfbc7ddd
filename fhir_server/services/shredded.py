"""Reading stored bodies as a restore does: opened, apart from those an erasure shredded.

A version about a patient is sealed under that patient's data key; erasing the patient
destroys the key, so the version can never be read again. A restore must tell such a version
from one it cannot open because its data keys are not the backed-up server's: a version
counts as shredded only when its key is one the erasure ledger lists as destroyed
(services/erase.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..crypto import BodyCodec, EnvelopeError, UnreadableBody, key_id_of
from ..store.base import Version
from ..store.bodies import opened


@dataclass
class StoredTrail:
    """What reading stored versions found: the ids of the shredded ones, and of those that
    cannot be read for another reason (damaged, or sealed under foreign data keys)."""

    shredded: set[str] = field(default_factory=set)
    unreadable: set[str] = field(default_factory=set)


def classify(trail: StoredTrail, codec: BodyCodec, destroyed: frozenset[bytes],
             version: Version) -> bytes | None:
    """One stored version's opened body; None (noted in `trail`) when it cannot be opened,
    or has no body."""
    if version.body is None:
        return None
    try:
        body = opened(codec, version).body
    except UnreadableBody:
        shredded = version.body[:1] != b"{" and _key_id(version.body) in destroyed
        (trail.shredded if shredded else trail.unreadable).add(version.id)
        return None
    return body


def _key_id(body: bytes) -> bytes | None:
    try:
        return key_id_of(body)
    except EnvelopeError:
        return None
