"""A 5,000-entry transaction needs no more than about 10x its own size in memory
(http.html#transaction; the ingestion issue's limit). Memory is counted by tracemalloc, in
bytes, so the test is deterministic; the validator is warmed first because its schemas are
compiled once per process, not per request."""

from __future__ import annotations

import re
import tracemalloc
import uuid
from pathlib import Path

import orjson
import pytest

from fhir_server.app import open_context
from fhir_server.services import bundle as bundles
from fhir_server.settings import Settings
from tests.conftest import SHARED

pytestmark = pytest.mark.anyio
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def transaction_of(size: int) -> bytes:
    """Copies of the Synthea patient bundles, each with fresh UUIDs, cut to `size` entries."""
    sources = [p.read_bytes() for p in sorted((SHARED / "synthea").glob("*.json"))
               if not p.name.startswith(("hospital", "practitioner"))]
    entries: list[object] = []
    while len(entries) < size:
        fresh: dict[bytes, bytes] = {}
        body = _UUID.sub(lambda m: fresh.setdefault(m.group(), str(uuid.uuid4()).encode()),
                         sources[len(entries) % len(sources)])
        entries += orjson.loads(body)["entry"]
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries[:size]})


async def test_five_thousand_entries_stay_under_ten_times_their_size(tmp_path: Path) -> None:
    body = transaction_of(5000)
    settings = Settings(data_dir=tmp_path, validate_with_models=False)
    async with open_context(settings) as context:
        for entry in orjson.loads(body)["entry"]:
            context.validator.issues(entry["resource"])
        tracemalloc.start()
        try:
            _, entries = bundles.read_bundle(context, body, 10_000)
            outcome = await bundles.transaction(context, entries)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(outcome.entries) == 5000
    assert all(e.result is not None and e.result.outcome == "created" for e in outcome.entries)
    assert peak < 10 * len(body), f"peak {peak / len(body):.1f}x the body"
