"""Reading the audit trail as stored, for `fhir-server audit verify` and restores: every
AuditEvent's body, opened, apart from those an erasure shredded.

An AuditEvent about a patient is sealed under that patient's data key; erasing the patient
destroys the key, so the event can never be read again, while the hash chain still holds its
link. Such an event is told apart from a damaged or forged one by its key: the erasure
ledger lists the ids of the keys each erasure destroyed (services/erase.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ..crypto import BodyCodec, EnvelopeError, UnreadableBody, key_id_of
from ..store.base import Store, Version
from ..store.bodies import opened


@dataclass
class StoredTrail:
    """The AuditEvents of an audit store, by id: readable ones, ids of the shredded ones,
    and the ids of those that cannot be read for another reason (damaged, or foreign)."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    shredded: set[str] = field(default_factory=set)
    unreadable: set[str] = field(default_factory=set)


def classify(trail: StoredTrail, codec: BodyCodec, destroyed: frozenset[bytes],
             version: Version) -> bytes | None:
    """Note one stored AuditEvent version in `trail`; its opened body, None if it has none."""
    if version.body is None:
        return None
    try:
        body = opened(codec, version).body
    except UnreadableBody:
        shredded = version.body[:1] != b"{" and _key_id(version.body) in destroyed
        (trail.shredded if shredded else trail.unreadable).add(version.id)
        return None
    assert body is not None
    trail.events[version.id] = orjson.loads(body)
    return body


def _key_id(body: bytes) -> bytes | None:
    try:
        return key_id_of(body)
    except EnvelopeError:
        return None


async def read_trail(store: Store, codec: BodyCodec, destroyed: frozenset[bytes]) -> StoredTrail:
    """Every AuditEvent `store` holds (its current version: one deleted is not there), as
    stored, sorted out (see StoredTrail)."""
    current: dict[str, Version] = {}
    async for versions in store.dump():
        current.update((version.id, version) for version in versions)
    trail = StoredTrail()
    for version in current.values():
        classify(trail, codec, destroyed, version)
    return trail
