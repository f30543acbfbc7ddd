"""The re-match job reads each patient's record as a search per type and patient would
(trials/rematch.py `_evaluate` reads a batch of patients' compartments at once): for random
records, on both stores, the (patient, trial) pairs it finds matching, and the pairs it prunes
and evaluates, are what evaluating every trial against every record read search by search
gives, and `$match`, the investigator's counts and the figures pass judge each record alike
(whatever form its Medication reference takes); and no Medication of the store is read
along the way but those the records name."""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server import clock
from fhir_server.search import extract
from fhir_server.services import patient_record, reach
from fhir_server.services.context import Context
from fhir_server.services.server_writes import as_server
from fhir_server.store.base import Delete, Write
from fhir_server.trials import figures_pass, inverse_population, rematch
from fhir_server.trials.eligibility import INELIGIBLE, Shared, TrialIndex, evaluate, pinned, read_record, read_trial
from fhir_server.trials.eligibility_record import TYPES, medication_named
from tests.trials.eligibility_builders import (ATC, LOINC, coded, condition, criterion, group, medication,
                                               observation, patient, procedure)
from tests.trials.match_world import BREAST, CRITERIA, HER2, POSITIVE

SNOMED = "http://snomed.info/sct"
PRIOR = criterion("prior-treatment", coded(ATC, "L01XE"), text="Prior kinase inhibitor")
SURGERY = criterion("prior-treatment", coded(SNOMED, "392021009"), exclude=True, text="No lumpectomy")
NAIVE = criterion("prior-treatment", coded(ATC, "L01XE"), exclude=True, text="No prior kinase inhibitor")
TRIALS = [read_trial(id, [group(f"{id}-criteria", *criteria)]) for id, criteria in
          [*CRITERIA.items(), ("prior", [BREAST, PRIOR]), ("no-surgery", [BREAST, SURGERY]),
           ("naive", [BREAST, NAIVE])]]
_runs = itertools.count()

records = st.lists(st.fixed_dictionaries({
    "patient": st.sampled_from(["kept", "deleted", "never"]),  # "never": a record without its Patient
    "gender": st.sampled_from(["female", "male"]),
    "born": st.sampled_from(["1950-03-01", "2015-01-01"]),
    "diagnoses": st.lists(st.sampled_from(["C50.4", "C34.1", "C79.3", "C18.7"]), max_size=2, unique=True),
    "her2": st.sampled_from([None, POSITIVE, "LA6577-6"]),
    "ecog": st.one_of(st.none(), st.integers(0, 4)),
    "drug": st.sampled_from([None, "L01XE03", "L01BC06"]),
    # A Medication resource named, not a code: as written, versioned, under this server's base,
    # one every patient of the run with that drug names, or one since deleted.
    "drug_by_reference": st.sampled_from([None, "plain", "versioned", "absolute", "shared", "deleted"]),
    "surgery": st.booleans(),
    "elsewhere": st.booleans(),  # another's Observation naming this patient as its performer
}), min_size=1, max_size=6)


def _resources(id: str, spec: dict[str, Any], base: str) -> list[dict[str, Any]]:
    """The stored record of `spec` (ids prefixed by the patient's, but a shared Medication's,
    by the run's; a deleted Medication's id ends in "-gone")."""
    subject = {"subject": {"reference": f"Patient/{id}"}}
    found: list[dict[str, Any]] = []
    if spec["patient"] != "never":
        found.append(patient(spec["born"], spec["gender"], id=id))
    found += [{**condition(code, id=f"{id}-c{n}"), **subject} for n, code in enumerate(spec["diagnoses"])]
    if spec["her2"]:
        found.append({**observation(HER2, coded(LOINC, spec["her2"]), id=f"{id}-her2"), **subject})
    if spec["ecog"] is not None:
        found.append({**observation("89247-1", {"valueInteger": spec["ecog"]}, id=f"{id}-ecog"), **subject})
    if spec["drug"]:
        statement = {**medication(spec["drug"], "2025-01-01", id=f"{id}-m"), **subject}
        if form := spec["drug_by_reference"]:
            drug = {"shared": f"{id.rsplit('-', 1)[0]}-{spec['drug']}", "deleted": f"{id}-gone"}.get(form, f"{id}-drug")
            found.append({"resourceType": "Medication", "id": drug, "code": statement.pop("medicationCodeableConcept")})
            reference = {"versioned": f"Medication/{drug}/_history/1",
                         "absolute": f"{base}/Medication/{drug}"}.get(form, f"Medication/{drug}")
            statement["medicationReference"] = {"reference": reference}
        found.append(statement)
    if spec["surgery"]:
        found.append({**procedure(SNOMED, "392021009", id=f"{id}-pr"), **subject})
    if spec["elsewhere"]:
        found.append({**observation("89247-1", {"valueInteger": 4}, id=f"{id}-other-ecog"),
                      "subject": {"reference": "Patient/someone-else"}, "performer": [{"reference": f"Patient/{id}"}]})
    return found


async def _store(ctx: Context, specs: list[dict[str, Any]], run: int) -> list[str]:
    ids = [f"r{run}-{n}" for n in range(len(specs))]
    resources = {(r["resourceType"], r["id"]): r for id, spec in zip(ids, specs, strict=True)
                 for r in _resources(id, spec, ctx.base_url)}
    for resource in resources.values():
        resource.pop("meta", None)
    await ctx.store.commit([Write(type, id, r, extract(r)) for (type, id), r in resources.items()])
    await ctx.store.commit([Delete("Patient", id) for id, spec in zip(ids, specs, strict=True)
                            if spec["patient"] == "deleted"]
                           + [Delete(type, id) for type, id in resources if id.endswith("-gone")])
    return ids


async def _searched(ctx: Context, id: str) -> list[dict[str, Any]] | None:
    """A patient's record read one search per type (None: no Patient). Medications name no
    patient: those the record's treatments name are read by id."""
    found = await reach.find(ctx, "Patient", [("_id", id)])
    if not found:
        return None
    for resource_type in TYPES[1:]:
        if resource_type != "Medication":
            found += await reach.find(ctx, resource_type, [("patient", f"Patient/{id}")])
    for target in {medication_named(r) for r in found} - {None}:
        found += await reach.find(ctx, "Medication", [("_id", str(target).removeprefix("Medication/"))])
    return found


async def _brute_force(ctx: Context, ids: list[str], today: date) -> tuple[list[tuple[str, str]], int, int]:
    matches, pruned, evaluated = [], 0, 0
    index = TrialIndex(TRIALS)
    for id in ids:
        found = await _searched(ctx, id)
        if found is None:  # a Patient deleted: left out
            continue
        record = read_record([(pinned(r), r) for r in found], today)
        # As `$match` reads it (services/patient_record.py): the same verdict for each trial.
        read = await patient_record.read(ctx, id, [t for t in TYPES if t != "Patient"])
        matched = read_record([(pinned(r), r) for r in patient_record.bodies(read)], today)
        # As the investigator's counts (inverse_population) and the figures pass read it.
        counted: dict[str, list[tuple[str, dict[str, Any]]]] = {
            id: [(pinned(r), r) for r in found if r["resourceType"] in ("Patient", "Condition")]}
        await inverse_population._rest(ctx, counted)
        figured = (await figures_pass._records(ctx, [id]))[id]
        for other in (matched, read_record(counted[id], today), read_record([(pinned(r), r) for r in figured], today)):
            assert [evaluate(t, other).verdict for t in TRIALS] == [evaluate(t, record).verdict for t in TRIALS]
        kept, _ = index.candidates(record)
        pruned += len(TRIALS) - len(kept)
        for trial in kept:
            evaluated += 1
            if evaluate(trial, record).verdict != INELIGIBLE:
                matches.append((id, trial.study))
    return sorted(matches), pruned, evaluated


@pytest.mark.parametrize("diagnoses_first", [True, False], ids=["few-trials", "many-trials"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=records)
def test_the_job_reads_records_as_a_search_per_type_and_patient(
        client: TestClient, monkeypatch: pytest.MonkeyPatch, diagnoses_first: bool, specs: list[dict[str, Any]]) -> None:
    monkeypatch.setattr(rematch, "FEW", len(TRIALS) if diagnoses_first else 0)
    ctx = as_server(client.app.state.context, "rematch")  # type: ignore[attr-defined]
    portal = client.portal  # type: ignore[union-attr]
    ids = portal.call(_store, ctx, specs, next(_runs))
    today = clock.now().date()
    plan = rematch._Pass(tuple(TRIALS), today, frozenset(t.study for t in TRIALS))
    matches, pruned, evaluated = portal.call(rematch._evaluate, ctx, TrialIndex(TRIALS), Shared(), plan, ids)
    assert (sorted(matches), pruned, evaluated) == portal.call(_brute_force, ctx, ids, today)


def test_the_job_reads_no_medication_of_other_records(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Medication names no patient: a search of them "by patient" had no clause and read
    every Medication of the store, at each batch of patients. The job reads those its
    records' treatments name, by id (before, none: a prior treatment given by a referenced
    Medication was unknown to it, and decided by `$match`)."""
    ctx = as_server(client.app.state.context, "rematch")  # type: ignore[attr-defined]
    portal = client.portal  # type: ignore[union-attr]
    spec = {"patient": "kept", "gender": "female", "born": "1950-03-01", "diagnoses": ["C50.4"], "her2": None,
            "ecog": None, "drug": "L01XE03", "drug_by_reference": "plain", "surgery": False, "elsewhere": False}
    ids = portal.call(_store, ctx, [spec, {**spec, "diagnoses": ["C34.1"]}], next(_runs))
    read: list[str] = []
    store = type(ctx.store)
    search, gather = store.search, store.gather

    async def searched(self: Any, query: Any, cursor: Any = None) -> Any:
        page = await search(self, query, cursor)
        read.extend(f"{v.resource_type}/{v.id}" for v in page.matches)
        return page

    async def gathered(self: Any, queries: Any) -> Any:
        found = await gather(self, queries)
        read.extend(f"{v.resource_type}/{v.id}" for v in found)
        return found

    monkeypatch.setattr(store, "search", searched)
    monkeypatch.setattr(store, "gather", gathered)
    plan = rematch._Pass(tuple(TRIALS), clock.now().date(), frozenset(t.study for t in TRIALS))
    for many in (False, True):  # diagnoses first, or whole records
        monkeypatch.setattr(rematch, "FEW", 0 if many else len(TRIALS))
        read.clear()
        portal.call(rematch._evaluate, ctx, TrialIndex(TRIALS), Shared(), plan, ids[:1])
        assert any(r.startswith("Condition/") for r in read), read
        assert [r for r in read if r.startswith("Medication/")] == [f"Medication/{ids[0]}-drug"], read
