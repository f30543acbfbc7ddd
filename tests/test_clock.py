"""One clock (fhir_server/clock.py): versions, Bundles, tokens and "today" read the same time,
so freezing it fixes all of them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fhir_server import clock
from fhir_server.model.bundle import bundle
from fhir_server.search import extract
from fhir_server.search.params.date import now_us
from fhir_server.clock import today
from fhir_server.store.base import Write
from fhir_server.store.sqlite import SqliteStore

AT = datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)


@pytest.mark.anyio
async def test_a_frozen_clock_stamps_versions_bundles_and_dates(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "clock.db")
    await store.open()
    try:
        with clock.frozen(AT) as frozen:
            resource = {"resourceType": "Patient", "id": "p"}
            [result] = await store.commit([Write("Patient", "p", resource, extract(resource))])
            assert result.version is not None
            assert result.version.last_updated == "2031-02-03T04:05:06.789012Z"
            assert bundle("searchset", [])["meta"]["lastUpdated"] == "2031-02-03T04:05:06.789012Z"
            assert today() == "2031-02-03"
            assert now_us() == clock.micros(AT)
            frozen.advance(86400)
            assert today() == "2031-02-04"
            assert clock.seconds() == AT.timestamp() + 86400
    finally:
        await store.close()
    assert clock.now().year != 2031  # released: the system clock again
