"""The layout of a store's search index, recorded in the store, and its rebuild in place.

What rows a resource gets in the index depends on settings outside the store: which search
parameters are protected (blind-indexed), their prefix cap, the key ring's index keys, and the
version of the rows a protected value gets (search/blind.py `BlindIndex.layout`). A store
searched under another layout than the one it was written under answers wrongly and silently
(a blind digest never equals a plaintext value, nor one under another key). So a store records
its layout as it is first opened, empty, and is refused from then on under any other, until
`fhir-server reindex` has rebuilt its index (`reindex` below). docs/blind-indexes.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import orjson

from ..crypto import BodyCodec, UnreadableBody
from ..model.errors import FhirError, Kind, fail
from ..search import BlindIndex, IndexEntry, Registry, extract
from .base import Outbox, Store, Version
from .bodies import opened_versions

KEY = "index/layout"  # the outbox record holding the layout (base.Outbox)
PLAIN: dict[str, Any] = {"protected": []}  # no blind index: every row in plaintext
REBUILDING = b'{"rebuilding":true}'  # a re-index under way (or cut short): matches no layout
BATCH = 500
REINDEX = "Stop the server and run `fhir-server reindex` to rebuild it"


class StaleIndex(FhirError):
    """The store's index was written under another layout than the settings give."""

    @classmethod
    def because(cls, why: str, remedy: str = REINDEX) -> StaleIndex:
        error = fail(Kind.BUSY, "transient", f"The store's search index {why}: searches would "
                     f"miss what it holds. {remedy} (docs/blind-indexes.md).")
        return cls(error.kind, error.issues)

    def __str__(self) -> str:
        return self.issues[0].diagnostics


class Reindexable(Store, Protocol):
    """A store whose index can be rebuilt in place (SqliteStore, MongoStore)."""

    def current(self, count: int = 1000) -> AsyncIterator[list[Version]]:
        """Every resource's current version that is not a deletion, `count` at a time,
        bodies as stored."""

    async def reindex(self, versions: Sequence[tuple[Version, Sequence[IndexEntry]]]) -> int:
        """Replace the index rows of each version that is still its resource's current one
        with `entries` (blinded as a write's); how many were."""


def layout_of(blind: BlindIndex | None) -> dict[str, Any]:
    """The layout of the rows a store with blind index `blind` writes."""
    return blind.layout() if blind is not None else PLAIN


def _encoded(layout: dict[str, Any]) -> bytes:
    return orjson.dumps(layout, option=orjson.OPT_SORT_KEYS)


async def is_empty(store: Store) -> bool:
    """Whether the store holds no version at all."""
    async for versions in store.dump(count=1):
        return not versions
    return True


async def recorded(store: Store) -> bytes | None:
    """The layout the store records (encoded), or None; StaleIndex if the record cannot be
    opened (sealed, and encryption off or other data keys)."""
    try:
        return next((body for key, body in await store.outbox(KEY) if key == KEY), None)
    except UnreadableBody:
        raise StaleIndex.because(
            "cannot be checked: its layout record cannot be opened with the settings' "
            "encryption (off, or other data keys)",
            "Open it with the encryption, key ring and data keys it was written under") from None


async def ensure(store: Store, layout: dict[str, Any]) -> None:
    """Record `layout` in an empty store that records none; StaleIndex unless the store
    records this one. Processes opening an empty store together record it once."""
    wanted = _encoded(layout)
    for _ in range(2):
        stored = await recorded(store)
        if stored == wanted:
            return
        if stored is not None or not await is_empty(store):
            raise StaleIndex.because(_difference(stored, layout))
        try:
            await store.commit([Outbox(put=((KEY, wanted),), expect=((KEY, None),))])
            return
        except FhirError as error:
            if error.kind is not Kind.PRECONDITION_FAILED:
                raise  # else another process recorded one first: compare with it
    raise StaleIndex.because("layout changed while it was being recorded")


def _difference(stored: bytes | None, wanted: dict[str, Any]) -> str:
    """What differs, in words that name no key nor value."""
    if stored is None:
        return "was written before stores recorded their index layout (2026-12-07)"
    found = orjson.loads(stored)
    if found.get("rebuilding"):
        return "is being rebuilt, or its rebuild did not finish"
    if not found.get("protected") or not wanted.get("protected"):
        return ("was written without blind indexes, and the settings protect parameters"
                if wanted.get("protected") else
                "was written with blind indexes, and the settings protect nothing (encryption off?)")
    if found.get("rows") != wanted.get("rows"):
        return "holds blind rows of an older version"
    if found.get("protected") != wanted.get("protected"):
        return "was written with another list of protected parameters (--protected-params)"
    if found.get("prefix_cap") != wanted.get("prefix_cap"):
        return (f"was written with a prefix cap of {found.get('prefix_cap')}, the settings "
                f"give {wanted.get('prefix_cap')} (--blind-prefix-cap)")
    return "was written under other index keys (another key ring)"


async def reindex(store: Reindexable, codec: BodyCodec, registry: Registry,
                  layout: dict[str, Any]) -> int:
    """Rebuild every current resource's index rows under the store's blind index, then
    record `layout`; how many resources. Until it ends the store records a rebuild, so a
    rebuild cut short is refused at start like any stale index, and is simply run again."""
    await store.commit([Outbox(put=((KEY, REBUILDING),))])
    done = 0
    async for versions in store.current(BATCH):
        opened = opened_versions(codec, versions)
        kept = {(v.resource_type, v.id) for v in opened}
        # A shredded body (its patient's erasure under way) has nothing to index: its rows of
        # the old layout (plaintext names, say) go, not kept until the erasure deletes it.
        if shredded := [(v, ()) for v in versions if (v.resource_type, v.id) not in kept]:
            await store.reindex(shredded)
        done += await store.reindex([(v, extract(orjson.loads(v.body or b"{}"), registry=registry))
                                     for v in opened])
    await store.commit([Outbox(put=((KEY, _encoded(layout)),))])
    return done
