"""A full pull that did not reach the end of the base's searchset closes nothing: only a
complete list says which trials vanished (issue 17 §1 review; docs/catalogue.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest

from fhir_server.app import open_context
from fhir_server.model.errors import FhirError
from fhir_server.services.context import Context
from fhir_server.settings import Settings
from fhir_server.trials import sync as syncing
from fhir_server.trials.sync import SyncState, sync
from tests.trials.eclaire import example_unit

pytestmark = pytest.mark.anyio
BASE = "https://eclaire.example"


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[Context]:
    async with open_context(settings) as context:
        yield context


def _page(unit: list[dict], next_url: str | None) -> httpx.Response:
    links = [{"relation": "next", "url": next_url}] if next_url else []
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "link": links,
                                     "entry": [{"resource": r} for r in unit]})


async def _status(ctx: Context, id: str) -> str:
    found = await ctx.store.read("ResearchStudy", id)
    assert found is not None and found.body is not None
    return orjson.loads(found.body)["status"]


async def test_a_pull_cut_short_by_the_page_limit_closes_nothing(
        ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = example_unit("2023-500101-01-00"), example_unit("2023-500102-01-00")
    state = SyncState(tmp_path / "catalogue-sync.json")

    def complete(request: httpx.Request) -> httpx.Response:  # two pages
        return _page(second, None) if "page=2" in str(request.url) else _page(first, f"{BASE}/p?page=2")

    def looping(request: httpx.Request) -> httpx.Response:  # its next link never ends
        return _page(first, f"{BASE}/p?page=1")

    async with httpx.AsyncClient(transport=httpx.MockTransport(complete)) as client:
        await sync(ctx, client, BASE, state)
    monkeypatch.setattr(syncing, "MAX_PAGES", 3)
    async with httpx.AsyncClient(transport=httpx.MockTransport(looping)) as client:
        with pytest.raises(FhirError) as refused:
            await sync(ctx, client, BASE, state, full=True)
    assert "after 3 pages" in refused.value.issues[0].diagnostics
    assert await _status(ctx, "2023-500102-01-00") == "active"  # not closed on a partial list
    assert state.trials(BASE) == {"2023-500101-01-00", "2023-500102-01-00"}


@pytest.mark.parametrize("body", [b"<html>maintenance</html>", b"[1, 2]",
                                  b'{"resourceType": "OperationOutcome"}'])
async def test_a_page_that_is_not_a_bundle_is_refused_naming_the_base(
        ctx: Context, tmp_path: Path, body: bytes) -> None:
    state = SyncState(tmp_path / "catalogue-sync.json")
    async with httpx.AsyncClient(transport=httpx.MockTransport(
            lambda request: httpx.Response(200, content=body))) as client:
        with pytest.raises(FhirError) as refused:
            await sync(ctx, client, BASE, state)
    assert BASE in refused.value.issues[0].diagnostics
    assert not (tmp_path / "catalogue-sync.json").exists()


async def test_a_pull_with_fewer_trials_than_the_base_counts_closes_nothing(ctx: Context, tmp_path: Path) -> None:
    # The base says 2 trials match but its paging stops after one (an expired cursor, a
    # proxy dropping links): the list is partial, so a full pull must not close the other.
    first, second = example_unit("2023-500103-01-00"), example_unit("2023-500104-01-00")
    state = SyncState(tmp_path / "catalogue-sync.json")
    source = {"units": [first, second]}

    def eclaire(request: httpx.Request) -> httpx.Response:
        response = _page([r for unit in source["units"] for r in unit], None)
        return httpx.Response(200, json={**response.json(), "total": 2})

    async with httpx.AsyncClient(transport=httpx.MockTransport(eclaire)) as client:
        await sync(ctx, client, BASE, state)
        source["units"] = [first]
        with pytest.raises(FhirError) as refused:
            await sync(ctx, client, BASE, state, full=True)
    assert "1 of the 2" in refused.value.issues[0].diagnostics
    assert await _status(ctx, "2023-500104-01-00") == "active"
