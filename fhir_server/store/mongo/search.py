"""Search on MongoDB: a Query AST -> one page of matches, includes, total (FHIR R4 search.html).

Paging is keyset, as on SQLite: the cursor carries the sort key values and the `pk` (an
ObjectId given at creation) of the page boundary. Without `_sort` a page is one indexed `find`
in `pk` order; with it, an aggregation computes each sort key from the entry array (lowest
value ascending, highest descending, resources without a value last) and sorts on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

from ...model.errors import Kind, fail
from ...search import BlindIndex, Include, Query, Registry, Sort
from ..base import SearchPage, Version
from .. import decrypted_sort, includes
from ..cursors import decode, encode
from ..decrypted_sort import Opener
from .filters import FALSE, Filter, FilterBuilder, all_of, any_of, shard_filter
from .layout import ARRAY_OF_PARAM_TYPE, key

DEFAULT_COUNT = 20
VERSION_FIELDS = {"_id": 0, "type": 1, "id": 1, "version": 1, "lastUpdated": 1, "method": 1,
                  "body": 1, "pk": 1}
# Param type -> (entry field sorted ascending, entry field sorted descending).
_SORT_FIELDS = {
    "string": ("v", "v"), "token": ("c", "c"), "reference": ("i", "i"), "uri": ("v", "v"),
    "date": ("lo", "hi"), "number": ("lo", "hi"), "quantity": ("lo", "hi"),
}


def version_of(doc: dict[str, Any]) -> Version:
    """The Version a resource or history document holds."""
    body = doc["body"]
    return Version(doc["type"], doc["id"], doc["version"], doc["lastUpdated"], doc["method"],
                   bytes(body) if body is not None else None)


class _SortKey:
    """One `_sort` key: a document field, or a value computed from an entry array."""

    def __init__(self, field: str, descending: bool, computed: dict[str, Any] | None = None):
        self.field = field
        self.descending = descending
        self.computed = computed


class MongoSearch:
    """Runs Query ASTs on the `resources` collection (inside `session` when given)."""

    def __init__(self, resources: AsyncCollection[dict[str, Any]], registry: Registry,
                 session: AsyncClientSession | None = None, blind: BlindIndex | None = None,
                 opened: Opener | None = None) -> None:
        """`blind`: protected parameters are indexed as digests; `opened` gives a stored
        version with its body readable (a `_sort` on a protected parameter reads it)."""
        self.resources = resources
        self.registry = registry
        self.session = session
        self.filters = FilterBuilder(registry, self)
        self.blind = blind or BlindIndex.nothing(registry)
        self.opened = opened

    # -- the Resolver of chains and _has ---------------------------------------------------

    async def ids(self, resource_type: str, where: Filter) -> list[str]:
        found = self.resources.find(all_of({"type": resource_type, "deleted": False}, where),
                                    {"_id": 0, "id": 1}, session=self.session)
        return [doc["id"] async for doc in found]

    async def referenced(self, source_type: str, param: str, target_type: str,
                         where: Filter) -> list[str]:
        reference = {"p": param, "u": None, "t": target_type}
        pipeline: list[dict[str, Any]] = [
            {"$match": all_of({"type": source_type, "deleted": False}, where,
                              {"ref": {"$elemMatch": reference}})},
            {"$unwind": "$ref"},
            {"$match": {f"ref.{k}": v for k, v in reference.items()}},
            {"$group": {"_id": "$ref.i"}},
        ]
        cursor = await self.resources.aggregate(pipeline, session=self.session)
        return [doc["_id"] async for doc in cursor if doc["_id"] is not None]

    # -- filtering -------------------------------------------------------------------------

    async def _types(self, query: Query) -> list[str]:
        if query.resource_type is not None:
            return [query.resource_type]
        if query.types:
            return list(query.types)
        return sorted(await self.resources.distinct("type", session=self.session))

    async def where(self, query: Query) -> Filter:
        """The filter of `query` over current (not deleted) resources."""
        if query.resource_type is not None:
            return all_of({"type": query.resource_type, "deleted": False},
                          shard_filter(query.resource_type, query.clauses),
                          await self.filters.clauses(query.clauses, query.resource_type))
        per_type = [all_of({"type": t},
                           await self.filters.clauses(self.blind.clauses(query.clauses, t), t))
                    for t in await self._types(query)]
        return all_of({"deleted": False}, any_of(per_type))

    # -- sorting -----------------------------------------------------------------------------

    def _sort_key(self, n: int, sort: Sort, rtype: str | None) -> list[_SortKey]:
        """The key(s) of one `_sort` parameter: a missing flag first, so that resources
        without a value come last whichever the direction."""
        if sort.param == "_id":
            return [_SortKey("id", sort.descending)]
        if sort.param == "_lastUpdated":
            return [_SortKey("lu", sort.descending)]
        param = self.registry.get(rtype, sort.param) if rtype else self.registry.common(sort.param)
        fields = _SORT_FIELDS.get(param.type) if param else None
        value: Any = None
        if param is not None and fields is not None:
            field = fields[1] if sort.descending else fields[0]
            array = f"${ARRAY_OF_PARAM_TYPE[param.type]}"
            entries = {"$filter": {"input": {"$ifNull": [array, []]},
                                   "cond": {"$eq": ["$$this.p", sort.param]}}}
            value = {"$max" if sort.descending else "$min":
                     {"$map": {"input": entries, "in": f"$$this.{field}"}}}
        flag = {"$cond": [{"$eq": [{"$ifNull": [f"$_k{n}", None]}, None]}, 1, 0]}
        return [_SortKey(f"_m{n}", False, flag), _SortKey(f"_k{n}", sort.descending, value)]

    def _keys(self, query: Query) -> list[_SortKey]:
        keys = [k for n, s in enumerate(query.sort) for k in self._sort_key(n, s, query.resource_type)]
        keys.append(_SortKey("pk", False))
        return keys

    @staticmethod
    def _after(keys: list[_SortKey], values: Sequence[Any], backwards: bool) -> Filter:
        """Documents strictly after (or before, `backwards`) the one with key `values`."""
        options = []
        for n, k in enumerate(keys):
            if values[n] is None:
                continue  # nothing sorts after a missing value among missing values
            equal = [{e.field: v} for e, v in zip(keys[:n], values[:n])]
            operator = "$gt" if k.descending == backwards else "$lt"
            options.append(all_of(*equal, {k.field: {operator: values[n]}}))
        return any_of(options)

    # -- the page ----------------------------------------------------------------------------

    async def search(self, query: Query, cursor: str | None) -> SearchPage:
        """One page of `query`, starting after/before `cursor`."""
        if self.blind.sorts_protected(query):
            return await self._search_decrypted(query, cursor, self.blind.sort_limit)
        query = self.blind.query(query)
        count = DEFAULT_COUNT if query.count is None else query.count
        where = await self.where(query)
        wants_total = query.total in ("accurate", "estimate") or query.summary == "count"
        total = await self.count(where) if wants_total else None
        if count == 0 or query.summary == "count" or where == FALSE:
            return SearchPage((), total=total)
        keys = self._keys(query)
        backwards, boundary = decode(cursor, len(keys), nulls=True) if cursor else (False, None)
        if boundary is not None:
            boundary[-1] = _object_id(boundary[-1])
        docs = await self._page(where, keys, boundary, backwards, count + 1)
        more = len(docs) > count
        docs = docs[:count]
        if backwards:
            docs.reverse()
        next_cursor = prev_cursor = None
        if docs and (more if not backwards else True):
            next_cursor = encode(False, _boundary(keys, docs[-1]))
        if docs and (boundary is not None if not backwards else more):
            prev_cursor = encode(True, _boundary(keys, docs[0]))
        matches = tuple(version_of(doc) for doc in docs)
        included = await self.includes(query, matches)
        return SearchPage(matches, included, next_cursor, prev_cursor, total)

    async def _search_decrypted(self, query: Query, cursor: str | None, limit: int) -> SearchPage:
        """`_sort` on a protected parameter: every match, sorted after decryption."""
        found = (await self.search(decrypted_sort.unsorted(query, limit), None)).matches
        page = decrypted_sort.sorted_page(query, found, cursor, limit, self.opened)
        return dataclasses.replace(page, included=await self.includes(query, page.matches))

    async def _page(self, where: Filter, keys: list[_SortKey], boundary: Sequence[Any] | None,
                    backwards: bool, limit: int) -> list[dict[str, Any]]:
        after = self._after(keys, boundary, backwards) if boundary is not None else {}
        order = [(k.field, -1 if k.descending != backwards else 1) for k in keys]
        computed = [k for k in keys if k.computed is not None or k.field.startswith("_k")]
        if not computed:
            projection = {**VERSION_FIELDS, **{k.field: 1 for k in keys}}
            found = self.resources.find(all_of(where, after), projection, sort=order,
                                        limit=limit, session=self.session)
            return [doc async for doc in found]
        values = {k.field: k.computed for k in computed if k.field.startswith("_k")}
        flags = {k.field: k.computed for k in computed if k.field.startswith("_m")}
        pipeline: list[dict[str, Any]] = [
            {"$match": where},
            {"$addFields": values},
            {"$addFields": flags},
        ]
        if after:
            pipeline.append({"$match": after})
        pipeline += [
            {"$sort": dict(order)},
            {"$limit": limit},
            {"$project": {**VERSION_FIELDS, **{k.field: 1 for k in keys}}},
        ]
        cursor = await self.resources.aggregate(pipeline, session=self.session)
        return [doc async for doc in cursor]

    async def count(self, where: Filter) -> int:
        if where == FALSE:
            return 0
        return await self.resources.count_documents(where, session=self.session)

    async def match_ids(self, query: Query, limit: int | None) -> list[str]:
        """Ids of current resources matching `query` (conditional interactions)."""
        query = self.blind.query(query)
        where = await self.where(query)
        if where == FALSE:
            return []
        found = self.resources.find(where, {"_id": 0, "id": 1}, sort=[("pk", 1)],
                                    limit=limit or 0, session=self.session)
        return [doc["id"] async for doc in found]

    # -- _include / _revinclude --------------------------------------------------------------

    async def includes(self, query: Query, matches: Sequence[Version]) -> tuple[Version, ...]:
        """Resources named by `_include` / `_revinclude`, iterating where asked."""
        keys = [(v.resource_type, v.id) for v in matches]
        return await includes.run_async(query, keys, self._include_round, self.opened)

    async def _include_round(self, frontier: list[tuple[str, str]], specs: list[Include],
                             rev: list[Include]) -> list[Version]:
        """What one include round adds (store/includes.py walks the rounds)."""
        targets: set[str] = set()
        if specs:
            sources = self.resources.find({"_id": {"$in": [key(t, i) for t, i in frontier]}},
                                          {"_id": 0, "type": 1, "ref": 1}, session=self.session)
            async for doc in sources:
                for ref in doc.get("ref", ()):
                    if ref.get("u") is None and ref.get("t") and ref.get("i") and any(
                        spec.source_type in (None, doc["type"])
                        and spec.param in (None, ref["p"])
                        and spec.target_type in (None, ref["t"])
                        for spec in specs
                    ):
                        targets.add(key(ref["t"], ref["i"]))
        out = []
        if targets:
            found = self.resources.find({"_id": {"$in": sorted(targets)}, "deleted": False},
                                        VERSION_FIELDS, sort=[("_id", 1)], session=self.session)
            out += [version_of(doc) async for doc in found]
        referrers = self._revinclude_filter(frontier, rev)
        if referrers != FALSE:
            found = self.resources.find(all_of({"deleted": False}, referrers), VERSION_FIELDS,
                                        sort=[("pk", 1)], session=self.session)
            out += [version_of(doc) async for doc in found]
        return out

    def _revinclude_filter(self, frontier: list[tuple[str, str]], rev: list[Include]) -> Filter:
        by_type: dict[str, list[str]] = {}
        for rtype, id in frontier:
            by_type.setdefault(rtype, []).append(id)
        options = []
        for rtype, ids in sorted(by_type.items()):
            for spec in rev:
                if spec.target_type not in (None, rtype):
                    continue
                reference: Filter = {"u": None, "t": rtype, "i": {"$in": sorted(ids)}}
                if spec.param is not None:
                    reference = {"p": spec.param, **reference}
                source = {"type": spec.source_type} if spec.source_type else {}
                options.append(all_of(source, {"ref": {"$elemMatch": reference}}))
        return any_of(options)


def _boundary(keys: list[_SortKey], doc: dict[str, Any]) -> list[Any]:
    values = [doc.get(k.field) for k in keys]
    values[-1] = str(values[-1])  # the pk ObjectId, as hex
    return values


def _object_id(value: Any) -> ObjectId:
    try:
        if not isinstance(value, str):
            raise TypeError(value)
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise fail(Kind.INVALID, "value", "Invalid or expired paging cursor.",
                   expression="_cursor") from None
