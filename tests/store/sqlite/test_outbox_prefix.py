"""Listing the SQLite outbox by prefix reads the records under the prefix, not every record
kept (the subscriptions keep thousands of events and list theirs several times a round)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fhir_server.store.base import Outbox
from fhir_server.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


async def _steps(store: SqliteStore, prefix: str) -> tuple[int, list[tuple[str, bytes]]]:
    """The SQLite virtual machine steps (in thousands) the listing of `prefix` took."""
    counted = [0]

    def count(conn: sqlite3.Connection) -> None:
        conn.set_progress_handler(lambda: counted.__setitem__(0, counted[0] + 1), 1000)

    await store._read(count)
    try:
        found = await store.outbox(prefix)
    finally:
        await store._read(lambda conn: conn.set_progress_handler(None, 0))
    return counted[0], found


async def test_a_prefix_is_listed_without_reading_the_other_records(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "outbox.db")
    await store.open()
    others = tuple((f"subs/e/other/{n:012d}", b"x") for n in range(20_000))
    edges = (("subs/e/s0", b"before"), ("subs/e/s1/", b"first"), ("subs/e/s1/\U0010ffff", b"last"),
             ("subs/e/s10", b"after"), ("subs/e/s2", b"after"))
    await store.commit([Outbox(put=others + edges)])
    steps, found = await _steps(store, "subs/e/s1/")
    assert found == [("subs/e/s1/", b"first"), ("subs/e/s1/\U0010ffff", b"last")]
    assert steps < 5, f"{steps} thousand steps: every record was read"
    assert [key for key, _ in await store.outbox("subs/e/s1")] == [
        "subs/e/s1/", "subs/e/s1/\U0010ffff", "subs/e/s10"]
    assert len(await store.outbox("")) == 20_005
    await store.close()
