"""The resources of many queries at once (`Store.gather`, and the erasure's sweep: erase.py):
a patient's compartment in one `find`, the OR of each query's filter, rather than one
search per type (66 in R4, most of them empty for any one patient)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...search import Query
from ..base import Version
from .filters import FALSE, Filter, any_of
from .search import VERSION_FIELDS, MongoSearch, version_of

if TYPE_CHECKING:
    from pymongo.asynchronous.client_session import AsyncClientSession

    from .store import MongoStore


async def where(store: MongoStore, queries: Sequence[Query]) -> Filter:
    """The current resources one of `queries` matches, as one filter (FALSE: none)."""
    search = MongoSearch(store.resources, store.registry, blind=store.blind)
    return any_of([await search.where(search.blind.query(query)) for query in queries])


async def found(store: MongoStore, queries: Sequence[Query], fields: dict[str, int],
                session: AsyncClientSession | None = None) -> list[dict[str, Any]]:
    """`fields` of the current resources one of `queries` matches (in `session`'s
    transaction, if given). In no order: a sort would let the planner walk the `pk` index
    rather than seek each branch of the OR."""
    matching = await where(store, queries)
    if matching == FALSE:
        return []
    return [doc async for doc in store.resources.find(matching, fields, session=session)]


async def gather(store: MongoStore, queries: Sequence[Query]) -> list[Version]:
    """The current versions (bodies as stored) of what one of `queries` matches."""
    return [version_of(doc) for doc in await found(store, queries, VERSION_FIELDS)]
