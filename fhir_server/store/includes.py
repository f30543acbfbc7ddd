"""The `_include` / `_revinclude` walk both stores share (FHIR R4 search.html#include).

Round 0 applies every include to the page's matches; later rounds apply the `:iterate` ones to
what the previous round added, until nothing new comes, MAX_ITERATIONS rounds have run or
MAX_INCLUDED resources are found. `walk` holds that logic as a generator and asks its driver,
at each round, for the resources one round adds; `run` and `run_async` drive it with a store's
own (synchronous or asynchronous) round.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence

from ..search import Include, Query
from .base import Version
from .bodies import unshredded
from .decrypted_sort import Opener

MAX_INCLUDED = 1000
MAX_ITERATIONS = 5

Key = tuple[str, str]
Round = tuple[list[Key], list[Include], list[Include]]  # frontier, _include, _revinclude
Walk = Generator[Round, list[Version], tuple[Version, ...]]


def walk(query: Query, matches: Sequence[Key], opened: Opener | None = None) -> Walk:
    """Yield each round's (frontier, includes, revincludes); receive what the round found.
    `opened` makes a stored version readable for the query's `admit_included` check."""
    seen = set(matches)
    found: dict[Key, Version] = {}
    frontier = list(matches)
    for round_ in range(MAX_ITERATIONS):
        specs = [i for i in query.include if round_ == 0 or i.iterate]
        rev = [i for i in query.revinclude if round_ == 0 or i.iterate]
        if not (specs or rev) or not frontier:
            break
        added = yield frontier, specs, rev
        new = [v for v in added if (v.resource_type, v.id) not in seen]
        seen.update((v.resource_type, v.id) for v in new)
        if query.admit_included is not None:  # what the caller may not see ends the walk there
            seen_by_caller = query.admit_included(list(unshredded(opened, new)) if opened else new)
            admitted = {(v.resource_type, v.id) for v in seen_by_caller}
            new = [v for v in new if (v.resource_type, v.id) in admitted]
        for version in new:
            found[(version.resource_type, version.id)] = version
        frontier = [(v.resource_type, v.id) for v in new]
        if len(found) >= MAX_INCLUDED:
            break
    return tuple(list(found.values())[:MAX_INCLUDED])


def run(query: Query, matches: Sequence[Key],
        one_round: Callable[[list[Key], list[Include], list[Include]], list[Version]],
        opened: Opener | None = None) -> tuple[Version, ...]:
    """The included resources, each round run by `one_round`."""
    if not (query.include or query.revinclude):
        return ()
    steps = walk(query, matches, opened)
    try:
        request = next(steps)
        while True:
            request = steps.send(one_round(*request))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_async(
    query: Query, matches: Sequence[Key],
    one_round: Callable[[list[Key], list[Include], list[Include]], Awaitable[list[Version]]],
    opened: Opener | None = None,
) -> tuple[Version, ...]:
    """`run` for a store whose round is a coroutine."""
    if not (query.include or query.revinclude):
        return ()
    steps = walk(query, matches, opened)
    try:
        request = next(steps)
        while True:
            request = steps.send(await one_round(*request))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
