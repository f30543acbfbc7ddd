"""Leases and numbering of the dispatcher (subscriptions/dispatcher.py) on every store: one
dispatcher at a time serves a subscription, a lease expires, a stale holder changes nothing,
pending events are numbered in write order exactly once."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from fhir_server import clock
from fhir_server.model.errors import FhirError
from fhir_server.search import default_registry
from fhir_server.store.base import Outbox, Store
from fhir_server.subscriptions import Dispatcher, Event, Policy, Sender, Timing, Watch, dump
from fhir_server.subscriptions.records import event, events_prefix, pending_key, state, state_key
from tests.store.conftest import store  # noqa: F401  (the contract suite's fixture)

pytestmark = pytest.mark.anyio


def _dispatcher(on: Store) -> Dispatcher:
    return Dispatcher(on, Watch(default_registry(), Policy()), desk=None,  # type: ignore[arg-type]
                      sender=Sender(), timing=Timing(lease=30))


async def test_one_holder_at_a_time_and_taken_over_once_expired(store: Store) -> None:  # noqa: F811
    first, second = _dispatcher(store), _dispatcher(store)
    with clock.frozen(datetime(2030, 1, 1, tzinfo=UTC)) as frozen:
        lease = await first._lease("s1")
        assert lease is not None
        assert await second._lease("s1") is None
        assert await first._lease("s1") == lease  # still fresh: kept as it is
        frozen.advance(20)
        renewed = await first._lease("s1")  # past half its life: renewed
        assert renewed is not None and renewed != lease
        frozen.advance(31)
        taken = await second._lease("s1")
        assert taken is not None
        assert await first._lease("s1") is None
        # The former holder's write under its old lease fails, and changes nothing.
        with pytest.raises(FhirError):
            await first._save("s1", renewed, None, state(None))
        assert await store.outbox(state_key("s1")) == []


async def test_pending_events_are_numbered_in_write_order_once(store: Store) -> None:  # noqa: F811
    dispatcher = _dispatcher(store)
    writes = [Event("Patient", "p1", n, "update", "PUT", f"2030-01-01T00:00:0{n}Z") for n in (2, 3, 4)]
    for n, written in enumerate(writes):
        await store.commit([Outbox(put=((pending_key("s1", 1000 + n), dump(written)),))])
    lease = await dispatcher._lease("s1")
    assert lease is not None
    body = await dispatcher._number("s1", lease, None)
    body = await dispatcher._number("s1", lease, body)  # nothing pending any more
    assert state(body).events == 3
    numbered = [event(b) for _, b in await store.outbox(events_prefix("s1"))]
    assert [(e.number, e.version) for e in numbered] == [(1, 2), (2, 3), (3, 4)]
    assert await store.outbox("subs/p/") == []


async def test_a_lease_outlasts_the_send_it_is_taken_for(store: Store) -> None:  # noqa: F811
    first, second = _dispatcher(store), _dispatcher(store)
    with clock.frozen(datetime(2030, 1, 1, tzinfo=UTC)) as frozen:
        assert await first._lease("s1") is not None
        renewed = await first._lease("s1", send=60)  # a 60 s timeout against a 30 s lease
        frozen.advance(59)
        assert await second._lease("s1") is None
        assert renewed is not None and await first._lease("s1", send=60) == renewed  # 61 s left
        frozen.advance(2)
        assert await first._lease("s1", send=60) not in (None, renewed)  # 59 s: renewed


async def test_the_dispatchers_alive_share_the_subscriptions(store: Store) -> None:  # noqa: F811
    """Each server process runs a dispatcher: each takes an equal share of the leases, gives
    back what it holds beyond its share when another starts, and takes over the share of one
    that stopped once its leases expire."""
    first, second = _dispatcher(store), _dispatcher(store)
    ids = [f"s{n}" for n in range(10)]

    async def take(dispatcher: Dispatcher) -> None:
        await dispatcher._share(len(ids))
        for id in ids:
            await dispatcher._lease(id)

    async def held() -> list[int]:
        holders = [orjson.loads(body)["holder"] for _, body in await store.outbox("subs/l/")]
        return [holders.count(first.holder), holders.count(second.holder)]

    with clock.frozen(datetime(2030, 1, 1, tzinfo=UTC)) as frozen:
        await take(first)  # alone
        assert await held() == [10, 0]
        await take(second)  # announced; all are held
        assert await held() == [10, 0]
        frozen.advance(1)
        await take(first)  # gives back its share beyond 5
        assert await held() == [5, 0]
        await take(second)
        assert await held() == [5, 5]
        await take(first)
        await take(second)
        assert await held() == [5, 5]  # stable
        for _ in range(4):  # the first one stops; the second one goes on
            frozen.advance(10)
            await take(second)
        assert await held() == [0, 10]
