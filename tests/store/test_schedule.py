"""The schedule (store/schedule.py), run against every store: deduplication by key, claims
under a lease, an expired lease claimed again, finish and postpone only by the lease's
owner, cancellation by prefix, the purge of finished items, sealed bodies, preferences."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from fhir_server.store.base import Store
from fhir_server.store.schedule import Schedule, Scheduling

pytestmark = pytest.mark.anyio

S = 1_000_000  # microseconds


def schedule_of(store: Store) -> Schedule:
    return cast(Scheduling, store).schedule


async def test_an_item_is_added_once_per_key(store: Store) -> None:
    schedule = schedule_of(store)
    assert await schedule.enqueue([("r/1/a", 10 * S, b"one"), ("r/1/b", 20 * S, b"two")]) == ["r/1/a", "r/1/b"]
    assert await schedule.enqueue([("r/1/a", 99 * S, b"again"), ("r/2/a", 5 * S, b"three")]) == ["r/2/a"]
    items = await schedule.items("r/1/")
    assert [(i.key, i.due, i.body, i.state, i.attempts) for i in items] == [
        ("r/1/a", 10 * S, b"one", "pending", 0), ("r/1/b", 20 * S, b"two", "pending", 0)]


async def test_only_due_items_are_claimed_earliest_first(store: Store) -> None:
    schedule = schedule_of(store)
    await schedule.enqueue([("late", 30 * S, b"l"), ("early", 10 * S, b"e"), ("mid", 20 * S, b"m")])
    assert await schedule.claim(9 * S, 100 * S, "w1", 10) == []
    claimed = await schedule.claim(20 * S, 100 * S, "w1", 10)
    assert [(c.key, c.state, c.owner, c.lease, c.attempts) for c in claimed] == [
        ("early", "claimed", "w1", 100 * S, 1), ("mid", "claimed", "w1", 100 * S, 1)]
    assert [c.key for c in await schedule.claim(40 * S, 100 * S, "w2", 1)] == ["late"]


async def test_a_claimed_item_is_not_claimed_again_until_its_lease_expires(store: Store) -> None:
    schedule = schedule_of(store)
    await schedule.enqueue([("k", 0, b"x")])
    [first] = await schedule.claim(1 * S, 60 * S, "dead", 5)
    assert await schedule.claim(59 * S, 200 * S, "w2", 5) == []
    [again] = await schedule.claim(60 * S, 200 * S, "w2", 5)
    assert (again.owner, again.attempts, again.body) == ("w2", 2, b"x")
    # the first owner lost the lease: it can neither finish nor postpone the item
    assert not await schedule.finish("k", "dead")
    assert not await schedule.postpone("k", "dead", 0)
    assert await schedule.finish("k", "w2")
    assert not await schedule.finish("k", "w2")
    [done] = await schedule.items("k")
    assert done.state == "sent"
    assert await schedule.claim(10_000 * S, 20_000 * S, "w3", 5) == []


async def test_postpone_gives_the_item_back_for_later(store: Store) -> None:
    schedule = schedule_of(store)
    await schedule.enqueue([("k", 0, b"x")])
    await schedule.claim(1 * S, 60 * S, "w", 5)
    assert await schedule.postpone("k", "w", 30 * S)
    assert await schedule.claim(29 * S, 90 * S, "w", 5) == []
    [item] = await schedule.claim(30 * S, 90 * S, "w", 5)
    assert item.attempts == 2


async def test_cancel_by_prefix_leaves_sent_items_and_others(store: Store) -> None:
    schedule = schedule_of(store)
    await schedule.enqueue([("ref/1/1", 0, b""), ("ref/1/2", 5 * S, b""), ("ref/10/1", 0, b""),
                            ("ref/1/0", 0, b"")])
    [sent] = await schedule.claim(0, S, "w", 1)
    assert sent.key == "ref/1/0" and await schedule.finish(sent.key, "w")
    await schedule.claim(0, S, "w", 1)  # ref/1/1 claimed: cancelled too
    assert await schedule.cancel("ref/1/") == 2
    states = {i.key: i.state for i in await schedule.items("ref/")}
    assert states == {"ref/1/0": "sent", "ref/1/1": "cancelled", "ref/1/2": "cancelled",
                      "ref/10/1": "pending"}
    assert not await schedule.finish("ref/1/1", "w")
    assert [c.key for c in await schedule.claim(100 * S, 200 * S, "w", 10)] == ["ref/10/1"]


async def test_purge_deletes_only_sent_and_cancelled_items(store: Store) -> None:
    schedule = schedule_of(store)
    await schedule.enqueue([("sent", 0, b""), ("failed", 1, b""), ("claimed", 2, b""),
                            ("cancelled", 9 * S, b""), ("pending", 9 * S, b"")])
    for now, key, end in ((0, "sent", schedule.finish), (1, "failed", schedule.set_aside)):
        [item] = await schedule.claim(now, S, key, 1)
        assert item.key == key and await end(key, key)
    [claimed] = await schedule.claim(2, S, "w", 1)
    assert claimed.key == "claimed"
    assert await schedule.cancel("cancelled") == 1
    keys = ["sent", "failed", "claimed", "cancelled", "pending", "never-held"]
    assert await schedule.purge(keys) == 2
    assert {i.key: i.state for i in await schedule.items("")} == {
        "failed": "failed", "claimed": "claimed", "pending": "pending"}
    assert await schedule.purge([]) == 0
    # What makes the rule of notify/purge.py necessary: a purged key can be enqueued again.
    assert await schedule.enqueue([("sent", 0, b"")]) == ["sent"]


async def test_concurrent_claimers_never_share_an_item(store: Store) -> None:
    schedule = schedule_of(store)
    await schedule.enqueue([(f"k{n:03}", n, b"") for n in range(60)])
    batches = await asyncio.gather(*(schedule.claim(100, S, f"w{n}", 7) for n in range(12)))
    keys = [item.key for batch in batches for item in batch]
    assert len(keys) == len(set(keys)) == 60


async def test_bodies_and_preferences_are_sealed_at_rest(store: Store) -> None:
    schedule = schedule_of(store)
    await schedule.enqueue([("k", 0, b"Dr Secret-Name")])
    assert await schedule.preference("Practitioner/p") is None
    await schedule.set_preference("Practitioner/p", b'{"language": "fr-secret"}')
    await schedule.set_preference("Practitioner/p", b'{"language": "en-secret"}')
    assert await schedule.preference("Practitioner/p") == b'{"language": "en-secret"}'
    assert b"secret" not in await _raw(store)


async def _raw(store: Any) -> bytes:
    """Every byte the store keeps for the schedule, as stored."""
    if hasattr(store, "path"):
        await store.close()
        return b"".join(path.read_bytes() for path in store.path.parent.glob(store.path.name + "*"))
    found = b""
    for name in ("schedule", "notification_preferences"):
        async for doc in store.db[name].find({}):
            found += repr(doc).encode()
    return found
