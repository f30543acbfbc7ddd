"""Document layout of the MongoDB store: resource and history documents, their indexes.

`resources` holds one document per resource (its current version), `history` one per
version. A resource document carries its index entries (search/entries.py) inside itself, one
array per entry kind, so a write is a single-document replace and a search a query on one
collection with multikey indexes. docs/storage.md explains the layout and every index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel

from ...crypto import EnvelopeError, key_id_of
from ...search import (
    BlindIndex,
    CompositeEntry,
    DateEntry,
    IndexEntry,
    NumberEntry,
    PositionEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)

# Entry kind -> (array field, (document field, entry attribute)...). Short field names: they
# are repeated in every entry of every document.
FIELDS: dict[type, tuple[str, tuple[tuple[str, str], ...]]] = {
    StringEntry: ("str", (("v", "value"), ("x", "exact"))),
    TokenEntry: ("tok", (("s", "system"), ("c", "code"), ("tx", "text"),
                         ("ts", "type_system"), ("tc", "type_code"))),
    ReferenceEntry: ("ref", (("t", "type"), ("i", "id"), ("v", "version"), ("u", "url"),
                             ("is", "identifier_system"), ("iv", "identifier_value"))),
    DateEntry: ("date", (("lo", "low"), ("hi", "high"))),
    NumberEntry: ("num", (("v", "value"), ("lo", "low"), ("hi", "high"))),
    QuantityEntry: ("qty", (("v", "value"), ("lo", "low"), ("hi", "high"), ("s", "system"),
                            ("c", "code"), ("un", "unit"))),
    UriEntry: ("uri", (("v", "value"),)),
}
POSITION, COMPOSITE = "geo", "comp"
ARRAY_OF_PARAM_TYPE = {
    "string": "str", "token": "tok", "reference": "ref", "date": "date", "number": "num",
    "quantity": "qty", "uri": "uri", "special": POSITION, "composite": COMPOSITE,
}
ARRAYS = (*(array for array, _ in FIELDS.values()), POSITION, COMPOSITE)
# Kept in the document's own fields, not in entry arrays.
OWN_FIELDS = frozenset({"_id", "_lastUpdated"})


def key(resource_type: str, id: str) -> str:
    """The `_id` of a resource document."""
    return f"{resource_type}/{id}"


def _fields(entry: IndexEntry) -> dict[str, Any]:
    """An entry as a subdocument without its `param` (absent fields are None: not stored)."""
    if type(entry) is PositionEntry:
        return {"pt": {"type": "Point", "coordinates": [entry.longitude, entry.latitude]}}
    if type(entry) is CompositeEntry:
        return {f"k{n}": _fields(part) for n, part in enumerate(entry.components)}
    _, fields = FIELDS[type(entry)]
    return {name: value for name, attribute in fields
            if (value := getattr(entry, attribute)) is not None}


def _array(entry: IndexEntry) -> str:
    if type(entry) is PositionEntry:
        return POSITION
    if type(entry) is CompositeEntry:
        return COMPOSITE
    return FIELDS[type(entry)][0]


def entry_arrays(entries: Iterable[IndexEntry]) -> dict[str, list[dict[str, Any]]]:
    """The entry arrays of a resource document (duplicate entries collapse to one)."""
    arrays: dict[str, list[dict[str, Any]]] = {}
    seen: set[tuple[str, IndexEntry]] = set()
    for entry in entries:
        if entry.param in OWN_FIELDS:
            continue
        array = _array(entry)
        if (array, entry) in seen:
            continue
        seen.add((array, entry))
        arrays.setdefault(array, []).append({"p": entry.param, **_fields(entry)})
    return arrays


# The shard of resources that reference several patients (rare: say an Observation whose
# subject and performer are different patients). Searches for one patient include it.
SHARED_SHARD = "~several-patients"


def shard_key(resource_type: str, id: str, entries: Iterable[IndexEntry]) -> str:
    """Where a resource lives: the shard key of both collections.

    A Patient is `Patient/<id>`; a resource whose local references to patients all name one
    patient lives with that patient, `Patient/<that id>`, so one patient's data sits in one
    chunk range; one referencing several patients lives in SHARED_SHARD; any other is its own
    `<type>/<id>`. Hence every resource a search matches through a reference to Patient/X is
    in `Patient/X` or SHARED_SHARD, which is what `filters.shard_filter` routes by.
    """
    if resource_type == "Patient":
        return key("Patient", id)
    found = patients(resource_type, id, entries)
    if len(found) == 1:
        return key("Patient", found.pop())
    return SHARED_SHARD if found else key(resource_type, id)


def patients(resource_type: str, id: str, entries: Iterable[IndexEntry]) -> set[str]:
    """The ids of the patients a resource is (a Patient) or refers to locally: those whose
    compartment it may be in."""
    if resource_type == "Patient":
        return {id}
    return {entry.id for entry in entries if type(entry) is ReferenceEntry
            and entry.type == "Patient" and entry.url is None and entry.id}


def members_of(document: dict[str, Any] | None, codes: Iterable[str]) -> frozenset[str]:
    """The ids of the patients whose compartment a resource document puts it in: a Patient
    its own; another resource, the patients its entries reference locally through `codes`
    (the parameters of its type's compartment), as filters.py matches a compartment (`p`,
    `t`, `i`, no `u`). A deletion, or no document, is in none."""
    if document is None or document.get("deleted", True):
        return frozenset()
    if document["type"] == "Patient":
        return frozenset({document["id"]})
    wanted = set(codes)
    return frozenset(ref["i"] for ref in document.get("ref", ())
                     if ref["p"] in wanted and ref.get("t") == "Patient" and "u" not in ref
                     and ref.get("i"))


def resource_document(
    *, resource_type: str, id: str, pk: ObjectId, version: int, last_updated: str, lu: int,
    method: str, body: bytes | None, shard: str, entries: Sequence[IndexEntry],
    blind: BlindIndex | None = None,
) -> dict[str, Any]:
    """The `resources` document of a current version (a deletion has no body, no entries);
    `blind` turns the entries of protected parameters into digests (search/blind.py)."""
    document: dict[str, Any] = {
        "_id": key(resource_type, id), "type": resource_type, "id": id, "pk": pk,
        "version": version, "lastUpdated": last_updated, "lu": lu, "deleted": body is None,
        "method": method, "body": body, "shard": shard,
    }
    if body is not None:
        document.update(entry_arrays(entries if blind is None else blind.entries(resource_type, entries)))
    return document


def history_document(
    *, resource_type: str, id: str, version: int, last_updated: str, lu: int, seq: ObjectId,
    method: str, body: bytes | None, shard: str,
) -> dict[str, Any]:
    """The `history` document of one version; (`lu`, `seq`) orders versions globally, `key`
    is the data key that sealed its body (erase.py finds a patient's versions by it)."""
    return {
        "_id": f"{key(resource_type, id)}/{version}", "type": resource_type, "id": id,
        "version": version, "lastUpdated": last_updated, "lu": lu, "seq": seq, "method": method,
        "body": body, "shard": shard, "key": sealing_key(resource_type, body),
    }


def sealing_key(resource_type: str, body: bytes | None) -> bytes | None:
    """The id of the data key that sealed a stored body (None: a deletion, or a plain body,
    encryption off). MongoDB cannot match a prefix of a binary field, so it is a field.
    None for an AuditEvent too: no erasure removes one by key (they shred with it,
    store/routing.py), and its random key id would cost every audited request a write at a
    random place of the index `sealed_key` (docs/security.md#cost); null ones go together."""
    if body is None or resource_type == "AuditEvent":
        return None
    try:
        return key_id_of(body)
    except EnvelopeError:
        return None


def _index(*keys: tuple[str, Any], name: str, **options: Any) -> IndexModel:
    return IndexModel(list(keys), name=name, **options)


_UP, _DOWN = ASCENDING, DESCENDING
# Every search index leads with `type`: parameter codes repeat across types (`name`), and a
# search always names its type. Each multikey index serves `$elemMatch` on (p, value...).
RESOURCE_INDEXES = (
    _index(("shard", _UP), ("_id", _UP), name="shard_key"),  # shardCollection needs it
    _index(("type", _UP), ("deleted", _UP), ("pk", _UP), name="type_pk"),
    _index(("type", _UP), ("deleted", _UP), ("lu", _UP), name="type_lastUpdated"),
    _index(("shard", _UP), ("type", _UP), ("deleted", _UP), ("pk", _UP), name="compartment"),
    _index(("type", _UP), ("str.p", _UP), ("str.v", _UP), name="string"),
    _index(("type", _UP), ("str.p", _UP), ("str.x", _UP), name="string_exact"),
    _index(("type", _UP), ("tok.p", _UP), ("tok.c", _UP), ("tok.s", _UP), name="token"),
    _index(("type", _UP), ("ref.p", _UP), ("ref.t", _UP), ("ref.i", _UP), name="reference"),
    _index(("ref.i", _UP), ("ref.t", _UP), name="reference_target"),
    _index(("type", _UP), ("ref.p", _UP), ("ref.u", _UP), name="reference_url"),
    _index(("type", _UP), ("ref.p", _UP), ("ref.iv", _UP), name="reference_identifier"),
    _index(("type", _UP), ("date.p", _UP), ("date.lo", _UP), ("date.hi", _UP), name="date"),
    _index(("type", _UP), ("num.p", _UP), ("num.lo", _UP), name="number"),
    _index(("type", _UP), ("qty.p", _UP), ("qty.c", _UP), ("qty.lo", _UP), name="quantity"),
    _index(("type", _UP), ("uri.p", _UP), ("uri.v", _UP), name="uri"),
    _index(("type", _UP), ("comp.p", _UP), name="composite"),
    _index(("geo.pt", "2dsphere"), name="position"),
)
HISTORY_INDEXES = (
    _index(("shard", _UP), ("_id", _UP), name="shard_key"),
    _index(("lu", _DOWN), ("seq", _DOWN), name="system_history"),
    _index(("type", _UP), ("lu", _DOWN), ("seq", _DOWN), name="type_history"),
    _index(("type", _UP), ("id", _UP), ("lu", _DOWN), ("seq", _DOWN), name="instance_history"),
    _index(("shard", _UP), name="compartment"),
    _index(("key", _UP), name="sealed_key"),  # the versions a patient's keys sealed (erase.py)
)
# Claims serialise conditional creates on the same criteria (see store.py); a claim left by a
# crashed process expires.
CLAIM_INDEXES = (_index(("at", _UP), name="expiry", expireAfterSeconds=3600),)

# Collection -> its indexes besides `_id` (what `fhir-server migrate` builds, and what the
# self-check expects). `ids` holds one guard document per resource, `{_id: "<type>/<id>",
# shard}`: sharded on `_id`, it makes `_id` unique across the cluster, which `resources`
# (sharded on `{shard, _id}`) cannot; it also tells a write where a resource lives.
GUARDS = "ids"
# Scheduled items (mongo/schedule.py): found by state and due time, or an expired lease.
SCHEDULE = "schedule"
SCHEDULE_INDEXES = (_index(("state", _UP), ("due", _UP), name="due"),
                    _index(("state", _UP), ("lease", _UP), name="lease"))
INDEXES = {"resources": RESOURCE_INDEXES, "history": HISTORY_INDEXES, "claims": CLAIM_INDEXES,
           GUARDS: (_index(("_id", "hashed"), name="shard_key"),), SCHEDULE: SCHEDULE_INDEXES}
# Collection -> the shard key it must have on a sharded cluster (`claims` and the schedule's
# collections stay unsharded).
SHARD_KEYS = {"resources": {"shard": 1, "_id": 1}, "history": {"shard": 1, "_id": 1},
              GUARDS: {"_id": "hashed"}}
