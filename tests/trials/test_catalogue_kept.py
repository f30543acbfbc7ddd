"""The trial catalogue kept per store and brought up to date from the history
(trials/match_catalogue.py, catalogue_history.py) equals the catalogue read afresh, on each
store: after random writes, updates and deletions of studies, eligibility and other Groups and
Locations, several in the same instant, through two handles on the same store (two worker
processes), with a patient's Group erased now and then (history removed, the newest entry
too), and on MongoDB versions that appear behind newer ones within its settling time.
Equal means the same studies, the same trials and criteria, the same sites and the same
answers of the index."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server import clock
from fhir_server.search import default_registry, extract, parse_query
from fhir_server.services.context import Context
from fhir_server.store.base import Delete, Store, Write
from fhir_server.trials import match_catalogue
from fhir_server.trials.eligibility import read_record
from tests.store.conftest import DOUBLE
from tests.trials.kept_stores import Handle, context, opened, run
from tests.trials.eligibility_builders import condition, group, patient
from tests.trials.match_world import CRITERIA, RECENT, location, site

STUDIES, GROUPS, PLACES = ("s0", "s1", "s2"), ("g0", "g1", "g2"), ("l0", "l1", "l2")
MEMBER = "Patient/p"


def _study(id: str, enrolled: list[str], sites: list[tuple[str, str]], active: bool) -> dict[str, Any]:
    return {"resourceType": "ResearchStudy", "id": id, "status": "active" if active else "closed-to-accrual",
            "enrollment": [{"reference": f"Group/{g}"} for g in enrolled],
            "site": [site(place, status, RECENT) for place, status in sites]}


def _group(id: str, kind: str) -> dict[str, Any]:
    if kind in CRITERIA:
        return {k: v for k, v in group(id, *CRITERIA[kind]).items() if k != "meta"} | {
            "meta": {"profile": group(id)["meta"]["profile"]}}
    plain = {"resourceType": "Group", "id": id, "type": "person", "actual": kind == "members"}
    return plain | ({"member": [{"entity": {"reference": MEMBER}}]} if kind == "members" else {})


def _location(id: str, where: str) -> dict[str, Any]:
    return location(id, **{"paris": {"position": (48.8566, 2.3522)}, "lyon": {"postal": "69003"},
                           "nowhere": {}}[where])


studies = st.builds(lambda id, enrolled, sites, active: ("put", _study(id, enrolled, sites, active)),
                    st.sampled_from(STUDIES), st.lists(st.sampled_from(GROUPS), max_size=2),
                    st.lists(st.tuples(st.sampled_from(PLACES), st.sampled_from(["recruiting", "closed-to-accrual"])),
                             max_size=2),
                    st.booleans())
groups = st.builds(lambda id, kind: ("put", _group(id, kind)), st.sampled_from(GROUPS),
                   st.sampled_from(["breast", "lung", "her2", "plain", "members"]))
places = st.builds(lambda id, where: ("put", _location(id, where)), st.sampled_from(PLACES),
                   st.sampled_from(["paris", "lyon", "nowhere"]))
deletions = st.tuples(st.just("delete"), st.sampled_from(
    [f"ResearchStudy/{s}" for s in STUDIES] + [f"Group/{g}" for g in GROUPS] + [f"Location/{p}" for p in PLACES]))
LOAD = st.just(("load", None))
STEP = st.one_of(studies, groups, places, deletions, st.just(("erase", MEMBER)), LOAD, LOAD,
                 st.tuples(st.just("tick"), st.sampled_from([0.000001, 1.0, 30.0])))
# A step: what it does, whether the second handle writes it, whether it is stamped late.
STEPS = st.lists(st.tuples(STEP, st.booleans(), st.booleans()), min_size=5, max_size=40)


def _records() -> list[Any]:
    """Patients the index is asked about: breast cancer, lung cancer, no diagnosis."""
    today = clock.now().date()
    me = patient(birth="1965-01-01")
    diagnosed = [read_record([("Patient/p", me), ("Condition/c1", condition(code))], today)
                 for code in ("C50.4", "C34.1")]
    return [*diagnosed, read_record([("Patient/p", me)], today)]


def _same(kept: match_catalogue.Catalogue, fresh: match_catalogue.Catalogue) -> None:
    assert kept.studies == fresh.studies
    assert kept.trials == fresh.trials
    assert kept.sites == fresh.sites
    assert kept.index.trials == fresh.index.trials
    for mine, theirs in zip(_records(), _records()):
        assert kept.index.match(mine) == fresh.index.match(theirs)
        assert kept.index.verdicts(mine) == fresh.index.verdicts(theirs)


async def _write(store: Store, step: str, value: Any) -> None:
    if step == "put":
        await store.commit([Write(value["resourceType"], value["id"], value, extract(value))])
    elif step == "delete":
        await store.commit([Delete(*value.split("/"))])
    elif step == "erase":
        query, _ = parse_query("Group", [("member", value)], default_registry())
        await store.erase([query], ("Patient", value.split("/")[1]))


@pytest.mark.parametrize("kind", ["sqlite", DOUBLE])
@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_the_catalogue_kept_equals_the_catalogue_read_afresh(kind: str, steps: list[Any],
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    asyncio.run(run(kind, steps, tmp_path_factory.getbasetemp(), match_catalogue, _write, match_catalogue.load,
                    lambda kept, fresh, day: _same(kept, fresh)))


async def _only_what_changed(kind: str, base: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    with tempfile.TemporaryDirectory(dir=base) as folder:
        async with opened(kind, Path(folder)) as stores:
            ctx = context(stores.first)
            writes = [*(_location(p, "paris") for p in PLACES), *(_group(g, "breast") for g in GROUPS),
                      *(_study(f"t{n}", [GROUPS[n % 3]], [(PLACES[n % 3], "recruiting")], True) for n in range(9))]
            await stores.first.commit([Write(r["resourceType"], r["id"], r, extract(r)) for r in writes])
            await match_catalogue.load(ctx)
            written = [_group("g1", "lung"), _location("l2", "lyon"), _study("t0", ["g0"], [], False)]
            for resource in written:  # another worker process writes
                await stores.second.commit([Write(resource["resourceType"], resource["id"], resource,
                                                  extract(resource))])
            searched: list[tuple[str, list[tuple[str, str]]]] = []
            real, trials = match_catalogue.reach.matching, match_catalogue.read_trial
            read: list[str] = []

            def matching(ctx: Context, resource_type: str, params: list[tuple[str, str]]) -> Any:
                searched.append((resource_type, list(params)))
                return real(ctx, resource_type, params)

            match_catalogue.reach.matching = matching  # type: ignore[assignment]
            match_catalogue.read_trial = (  # type: ignore[assignment]
                lambda id, groups: read.append(id) or trials(id, groups))
            try:
                kept = await match_catalogue.load(ctx)
            finally:
                match_catalogue.reach.matching, match_catalogue.read_trial = real, trials  # type: ignore[assignment]
            # Those enrolling g1; t0 was written but names the same version of g0: kept.
            assert sorted(read) == ["t1", "t4", "t7"]
            assert kept.trials["t1"].criteria[0].codes == (("http://hl7.org/fhir/sid/icd-10", "C34"),)
            assert kept.sites["t2"][0].geocoded and not kept.sites["t0"]
            _same(kept, await match_catalogue.load(context(Handle(stores.first))))
            return searched


@pytest.mark.parametrize("kind", ["sqlite", DOUBLE])
def test_a_write_reads_again_only_what_it_changed(kind: str, tmp_path: Path) -> None:
    """After a study, a Group and a Location are written (by another handle), bringing the
    catalogue up to date reads those three by `_id`, and the criteria of the trials enrolling
    the Group, nothing else."""
    searched = asyncio.run(_only_what_changed(kind, tmp_path))
    assert sorted((t, dict(p)["_id"]) for t, p in searched) == [
        ("Group", "g1"), ("Location", "l2"), ("ResearchStudy", "t0")]
    assert [dict(p).get("_profile") for t, p in searched if t == "Group"] == [group("g")["meta"]["profile"][0]]
