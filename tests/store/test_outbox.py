"""The outbox (store/base.py `Outbox`, `Store.outbox`), run against every store: records kept
in a unit of work are durable with its writes, and gone with them when it fails."""

from __future__ import annotations

import pytest

from fhir_server.model.errors import FhirError
from fhir_server.search import extract
from fhir_server.store.base import Outbox, Store, Write
from tests.builders import patient

pytestmark = pytest.mark.anyio


def _write(id: str, **options: bool) -> Write:
    resource = {**patient(), "id": id}
    return Write("Patient", id, resource, extract(resource), **options)


async def test_records_are_kept_with_the_writes_and_found_by_prefix(store: Store) -> None:
    [_, none] = await store.commit([_write("a"), Outbox(put=(("audit/x/r1/1", b"one"),))])
    assert none.outcome == "none"
    await store.commit([_write("b"), Outbox(put=(("audit/x/r1/2", b"two"), ("audit/xy/r2/1", b"3")))])
    assert await store.outbox("audit/x/") == [("audit/x/r1/1", b"one"), ("audit/x/r1/2", b"two")]
    await store.commit([Outbox(put=(("audit/x/r1/2", b"again"),), remove=("audit/x/r1/1", "gone"))])
    assert await store.outbox("audit/") == [("audit/x/r1/2", b"again"), ("audit/xy/r2/1", b"3")]


async def test_a_failed_unit_keeps_no_record_and_removes_none(store: Store) -> None:
    await store.commit([_write("a"), Outbox(put=(("audit/x/r1/1", b"one"),))])
    with pytest.raises(FhirError):
        await store.commit([Outbox(put=(("audit/x/r2/1", b"two"),), remove=("audit/x/r1/1",)),
                            _write("a", create_only=True)])
    assert await store.outbox("audit/") == [("audit/x/r1/1", b"one")]
    with pytest.raises(RuntimeError):
        async with store.transaction() as unit:
            await unit.apply([_write("c"), Outbox(put=(("audit/x/r3/1", b"three"),))])
            raise RuntimeError("the transaction fails after its writes")
    assert await store.outbox("audit/") == [("audit/x/r1/1", b"one")]
    assert await store.read("Patient", "c") is None


async def test_expect_sets_a_record_only_while_it_holds_what_the_caller_read(store: Store) -> None:
    """`Outbox.expect`: a compare-and-set (the subscriptions' leases and counters)."""
    await store.commit([Outbox(put=(("subs/l/s1", b"free"),), expect=(("subs/l/s1", None),))])
    with pytest.raises(FhirError) as refused:
        await store.commit([Outbox(put=(("subs/l/s1", b"mine"),), expect=(("subs/l/s1", None),))])
    assert refused.value.kind.name == "PRECONDITION_FAILED"
    with pytest.raises(FhirError):  # a stale read fails, and nothing of its unit is kept
        await store.commit([_write("a"), Outbox(put=(("subs/l/s1", b"mine"), ("subs/e/1", b"x")),
                                                expect=(("subs/l/s1", b"old"),))])
    assert await store.read("Patient", "a") is None
    assert await store.outbox("subs/") == [("subs/l/s1", b"free")]
    await store.commit([Outbox(put=(("subs/l/s1", b"mine"),), expect=(("subs/l/s1", b"free"),))])
    async with store.transaction() as unit:
        await unit.apply([Outbox(remove=("subs/l/s1",), expect=(("subs/l/s1", b"mine"),))])
    assert await store.outbox("subs/") == []
