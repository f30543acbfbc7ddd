"""What the platform adds to a catalogue trial (an approved eligibility Group in its
`enrollment`, per-site recruiting statuses) survives a load or sync that rewrites the trial
from its source (trials/catalogue_local.py, docs/catalogue.md "Local additions")."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest

from fhir_server.access.principal import Principal, Role
from fhir_server.access.scopes import parse_scopes
from fhir_server.app import open_context
from fhir_server.services import server_writes
from fhir_server.services.context import Context
from fhir_server.services.server_writes import ServerWrite
from fhir_server.settings import Settings
from fhir_server.trials import catalogue, criteria_review
from fhir_server.trials.catalogue_sites import SITE_RECRUITMENT, with_site_status
from fhir_server.trials.sync import SyncState, sync
from tests.trials.eclaire import example_unit

pytestmark = pytest.mark.anyio
STUDY = "2022-500014-26-00"
SITE = f"Location/{STUDY}-site-1"
TEXT = "Adults 18 years or older"


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[Context]:
    async with open_context(settings) as context:
        yield context


async def _study(ctx: Context) -> tuple[int, dict]:
    found = await ctx.store.read("ResearchStudy", STUDY)
    assert found is not None and found.body is not None
    return found.version, orjson.loads(found.body)


async def _curate(ctx: Context) -> str:
    """Draft, approve (a person) and set a site status, as the platform's curators do."""
    drafted = await criteria_review.draft(ctx, STUDY, {"resourceType": "Parameters", "parameter": [
        {"name": "text", "valueString": TEXT}]})
    curator = Principal(Role.ADMINISTRATOR, "curator", "portal", parse_scopes("user/*.cruds"),
                        fhir_user="Practitioner/curator")
    await criteria_review.approve(dataclasses.replace(ctx, principal=curator), drafted.id)
    version, study = await _study(ctx)
    study = with_site_status(study, SITE, "suspended", date(2024, 6, 20))
    study["meta"] = {"profile": study["meta"]["profile"]}
    await server_writes.commit(ctx, [ServerWrite(study, new=False, if_match=version)])
    return drafted.id


async def test_a_changed_trial_from_its_source_keeps_its_approved_group_and_site_statuses(ctx: Context) -> None:
    await catalogue.store_all(ctx, example_unit())
    group = await _curate(ctx)
    before, _ = await _study(ctx)

    changed = await catalogue.store_all(ctx, example_unit(title="A new title", status="closed-to-accrual"))
    assert changed.outcomes == {"unchanged": 5, "updated": 1}
    version, study = await _study(ctx)
    assert version == before + 1
    assert study["title"] == "A new title" and study["status"] == "closed-to-accrual"
    assert [e["reference"] for e in study["enrollment"]] == [f"Group/{STUDY}-enrollment-group", f"Group/{group}"]
    [mark] = [e for e in study["site"][1]["extension"] if e["url"] == SITE_RECRUITMENT]
    assert mark["extension"][0] == {"url": "status", "valueCode": "suspended"}
    assert "extension" not in study["site"][0]


async def test_the_same_trial_again_after_curation_makes_no_new_version(ctx: Context) -> None:
    await catalogue.store_all(ctx, example_unit())
    await _curate(ctx)
    before, _ = await _study(ctx)
    assert (await catalogue.store_all(ctx, example_unit())).outcomes == {"unchanged": 6}
    assert (await _study(ctx))[0] == before


async def test_a_site_status_the_source_sends_wins_and_a_site_it_drops_is_dropped(ctx: Context) -> None:
    await catalogue.store_all(ctx, example_unit())
    await _curate(ctx)
    unit = example_unit(sites=1)  # site 1 (the one with our status) is gone at the source
    unit[0] = with_site_status(unit[0], f"Location/{STUDY}-site-0", "closed", date(2024, 6, 25))
    await catalogue.store_all(ctx, unit)
    _, study = await _study(ctx)
    assert [s["reference"] for s in study["site"]] == [f"Location/{STUDY}-site-0"]
    assert study["site"][0]["extension"][0]["extension"][0] == {"url": "status", "valueCode": "closed"}


async def test_an_enrollment_group_that_is_not_ours_is_not_kept(ctx: Context) -> None:
    await catalogue.store_all(ctx, example_unit())
    unit = example_unit()
    unit[0]["enrollment"] = [{"reference": "Group/another-eclaire-group"}]
    unit.append({**unit[1], "id": "another-eclaire-group"})
    await catalogue.store_all(ctx, unit)
    _, study = await _study(ctx)
    assert study["enrollment"] == [{"reference": "Group/another-eclaire-group"}]


async def test_a_sync_from_an_eclaire_base_keeps_the_curation(ctx: Context, tmp_path: Path) -> None:
    source = {"unit": example_unit()}

    def eclaire(request: httpx.Request) -> httpx.Response:  # one page, every trial
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": r} for r in source["unit"]]})

    state = SyncState(tmp_path / "catalogue-sync.json")
    async with httpx.AsyncClient(transport=httpx.MockTransport(eclaire)) as client:
        await sync(ctx, client, "https://eclaire.example", state)
        group = await _curate(ctx)
        before, _ = await _study(ctx)
        source["unit"] = example_unit(title="Retitled at the source")
        report = await sync(ctx, client, "https://eclaire.example", state, full=True)
    assert report.stored.outcomes == {"unchanged": 5, "updated": 1} and report.closed == []
    version, study = await _study(ctx)
    assert version == before + 1 and study["title"] == "Retitled at the source"
    assert {"reference": f"Group/{group}"} in study["enrollment"]
    assert any(e["url"] == SITE_RECRUITMENT for e in study["site"][1]["extension"])


async def test_a_trial_whose_source_lists_no_site_any_more_is_updated(ctx: Context) -> None:
    # A trial closed at the source often comes without its sites; the stored one has a status
    # on one of them. Keeping statuses must not turn the absent `site` into an empty array,
    # which R4 forbids: the update was refused, at every sync, and the trial stayed open here.
    await catalogue.store_all(ctx, example_unit())
    await _curate(ctx)
    unit = example_unit(status="closed-to-accrual")
    del unit[0]["site"]
    report = await catalogue.store_all(ctx, unit)
    assert not report.failures, report.summary()
    _, study = await _study(ctx)
    assert study["status"] == "closed-to-accrual" and "site" not in study
