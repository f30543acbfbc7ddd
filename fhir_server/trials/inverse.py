"""`POST [base]/ResearchStudy/{id}/$match`: the patients who may join one trial, as the caller
may know them (access/study_match.py; docs/matching.md, "Inverse match").

- A referring physician gets their consented patients: a `searchset` Bundle of Patient, best
  first, each with the same explanation `$match` gives (criterion by criterion, evidence,
  nearest recruiting site). Every record is read with the physician's own access
  (services/patient_record.py).
- An investigator gets counts only, as a Parameters resource: how many patients may be
  eligible, per site and per criterion, among the patients the platform holds with their
  agreement and who have not objected; a figure from 1 to MIN_COUNT - 1 is given as
  `<MIN_COUNT`, so that no count singles anyone out. A patient whose active Consent allows
  pre-screening for this very study appears as a pseudonym (keyed by the server, stable per
  study), with verdicts and no evidence: a pseudonym opens nothing; the record reaches an
  investigator only when a physician refers the patient.
- Anyone else gets the answer a study that does not exist gets (404).

The records are read as the server for the counts; every patient counted or listed is noted
on the request's audit trail, so the AuditEvent names each patient the call touched.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from .. import clock
from ..model.bundle import bundle
from ..model.errors import FhirError, Issue, Kind
from ..model.ids import new_id
from ..model.outcome import operation_outcome
from ..search import parse_query
from ..services import crud, patient_record, reach, study_access
from ..services.context import Context, Payload
from ..services.guard import hidden, note
from ..services.server_writes import as_server
from . import match_catalogue, match_parameters
from .eligibility import ELIGIBLE, INELIGIBLE, RANK, Trial, TrialIndex, TrialResult, evaluate, pinned, read_record
from .eligibility_record import TYPES, Record
from .match import home
from .match_render import coding, result_extension
from .eligibility_codes import VERDICT_SYSTEM
from .match_sites import nearest
from .prescreening import pseudonym

MIN_COUNT = 5  # counts below this (but above 0) are given as "<MIN_COUNT"
NAMES = ("count",)
PAGE = 1000


@dataclass(frozen=True, slots=True)
class Evaluated:
    """One patient against one trial."""

    patient: str  # id
    result: TrialResult | None  # None: pruned by the index (an inclusion diagnosis missed)
    record: Record
    unreadable: tuple[str, ...] = ()  # types the caller may not search (criteria stay unknown)


def _count(body: dict[str, Any], max_count: int) -> int | None:
    """The `count` parameter (the most patients listed), after checking the body."""
    found = None
    for parameter in body.get("parameter", []):
        name = parameter.get("name")
        if name not in NAMES:
            raise match_parameters.invalid(str(name), f"unknown; this $match takes {', '.join(NAMES)}")
        if found is not None:
            raise match_parameters.invalid("count", "given more than once")
        found = parameter.get("valuePositiveInt", parameter.get("valueInteger"))
        if not isinstance(found, int) or isinstance(found, bool) or found < 1:
            raise match_parameters.invalid("count", "a positive integer")
    return min(found, max_count) if found is not None else None


async def match(ctx: Context, study_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The inverse match (module docstring)."""
    view = await study_access.visible(ctx, study_id)
    if view is None:  # before anything is read: the same answer whether the study exists or not
        raise hidden("ResearchStudy", study_id)
    if body.get("resourceType") != "Parameters":
        raise match_parameters.invalid("resourceType", "the body is a Parameters resource")
    crud.check_resource(ctx, "Parameters", Payload(body, body))
    count = _count(body, ctx.max_page_size)
    await crud.read(ctx, "ResearchStudy", study_id)  # 404 for an unknown study
    catalogue = await match_catalogue.load(ctx)
    trial = catalogue.trials[study_id]
    today = clock.now().date()
    if view is study_access.View.PATIENTS:
        return await _patients(ctx, trial, catalogue, today, count)
    return await _counts(ctx, trial, catalogue, today)


def _judge(index: TrialIndex, trial: Trial, patient: str, record: Record,
           unreadable: tuple[str, ...] = ()) -> Evaluated:
    _, pruned = index.candidates(record)
    return Evaluated(patient, None if pruned else evaluate(trial, record), record, unreadable)


async def evaluated(ctx: Context, index: TrialIndex, trial: Trial, patient: str, today: date) -> Evaluated:
    """Patient/`patient` against `trial` (indexed alone in `index`), their record read with
    the caller's own access and noted on the audit trail (NOT_FOUND out of reach)."""
    record = await patient_record.read(ctx, patient, [t for t in TYPES if t != "Patient"])
    entries = [(pinned(r), r) for r in patient_record.bodies(record)]
    return _judge(index, trial, patient, read_record(entries, today), record.unreadable)


async def _patients(ctx: Context, trial: Trial, catalogue: match_catalogue.Catalogue, today: date,
                    count: int | None) -> dict[str, Any]:
    """The physician's view: their consented patients who may be eligible, explained."""
    assert ctx.principal is not None and ctx.principal.consented is not None
    index = TrialIndex([trial])
    found: list[Evaluated] = []
    for patient in sorted(ctx.principal.consented):
        try:
            found.append(await evaluated(ctx, index, trial, patient, today))
        except FhirError as exc:
            if exc.kind is Kind.NOT_FOUND:  # deleted since the consent was given
                continue
            raise
    unreadable = {t for f in found for t in f.unreadable}
    listed = sorted((f for f in found if f.result is not None and f.result.verdict != INELIGIBLE),
                    key=lambda f: (*f.result.rank[:2], f.patient))  # type: ignore[union-attr]
    shown = listed[:count or ctx.default_page_size]
    entries = []
    for item in shown:
        assert item.result is not None and item.record.patient is not None
        site, distance = nearest(catalogue.sites[trial.study], home(item.record), today, catalogue.max_age_days)
        entries.append({"fullUrl": f"{ctx.base_url}/Patient/{item.patient}",
                        "resource": item.record.patient.resource,
                        "search": {"extension": [result_extension(item.result, trial.groups, site, distance)],
                                   "mode": "match", "score": item.result.score}})
    pruned = sum(f.result is None for f in found)
    issues = [Issue(code="informational", severity="information", diagnostics=(
        f"Patients: {len(found)} reached, {pruned} proven ineligible by the index without "
        f"evaluation, {len(found) - pruned} evaluated, {len(found) - pruned - len(listed)} "
        "evaluated ineligible (not listed)."))]
    issues += [Issue(code="incomplete", severity="warning", diagnostics=(
        f"The access token may not read {t}: criteria about it stay unknown.")) for t in sorted(unreadable)]
    entries.append({"fullUrl": f"urn:uuid:{new_id()}", "resource": operation_outcome(issues),
                    "search": {"mode": "outcome"}})
    return bundle("searchset", entries, total=len(listed))


Records = dict[str, list[tuple[str, dict[str, Any]]]]


async def _population(ctx: Context, day: str) -> tuple[Records, study_access.Agreements]:
    """The records of the patients an investigator's counts may include (study_access.counted),
    read as the server, by patient id, and every patient's active Consents; each Patient
    counted is noted on the request's audit trail."""
    server = as_server(ctx)
    agreements = await study_access.agreements(server)
    records: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    query, _ = parse_query("Patient", [("_count", str(PAGE))], ctx.registry)
    cursor = None
    while True:
        page = await ctx.store.search(query, cursor)
        for version in page.matches:
            if version.body is not None and study_access.counted(agreements, version.id, day):
                note(ctx, version)
                resource = orjson.loads(version.body)
                records[version.id] = [(pinned(resource), resource)]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    medications = {f"Medication/{m['id']}": m async for m in _every(server, "Medication", [])}
    for resource_type in TYPES:
        if resource_type in ("Patient", "Medication"):
            continue
        async for resource in _every(server, resource_type, []):
            owner = study_access.owner(resource)
            if owner in records:
                records[owner].append((pinned(resource), resource))
                target = (resource.get("medicationReference") or {}).get("reference", "")
                if target in medications:
                    records[owner].append((pinned(medications[target]), medications[target]))
    return records, agreements


def _every(ctx: Context, resource_type: str, params: list[tuple[str, str]]) -> AsyncIterator[dict[str, Any]]:
    query, _ = parse_query(resource_type, [*params, ("_count", str(PAGE))], ctx.registry)
    return reach.resources(ctx, query)


def _figure(name: str, value: int) -> dict[str, Any]:
    """A count, or `<MIN_COUNT` when it is small enough to single someone out."""
    if 0 < value < MIN_COUNT:
        return {"name": name, "valueString": f"<{MIN_COUNT}"}
    return {"name": name, "valueInteger": value}


async def _counts(ctx: Context, trial: Trial, catalogue: match_catalogue.Catalogue,
                  today: date) -> dict[str, Any]:
    """The investigator's view: figures, and the pseudonyms of pre-screening candidates."""
    day = today.isoformat()
    records, agreements = await _population(ctx, day)
    index = TrialIndex([trial])
    study = f"ResearchStudy/{trial.study}"
    verdicts: Counter[str] = Counter()
    per_site: Counter[str] = Counter()
    per_criterion: dict[str, Counter[str]] = defaultdict(Counter)
    texts: dict[str, str] = {}
    candidates: list[tuple[str, TrialResult]] = []
    pruned = 0
    for patient in sorted(records):
        item = _judge(index, trial, patient, read_record(records[patient], today))
        if item.result is None:
            pruned += 1
            continue
        for criterion in item.result.criteria:
            per_criterion[criterion.key][criterion.verdict] += 1
            texts[criterion.key] = criterion.text
        verdicts[item.result.verdict] += 1
        if item.result.verdict == INELIGIBLE:
            continue
        site, _ = nearest(catalogue.sites[trial.study], home(item.record), today, catalogue.max_age_days)
        per_site[site.location if site is not None else ""] += 1
        if study_access.prescreened(agreements, patient, study, day):
            candidates.append((pseudonym(ctx, trial.study, patient), item.result))
    parameters = [
        {"name": "study", "valueReference": {"reference": study}},
        _figure("population", len(records)), _figure("pruned", pruned),
        _figure("evaluated", len(records) - pruned),
        _figure("eligible", verdicts[ELIGIBLE]), _figure("undetermined", verdicts["undetermined"]),
    ]
    sites = sorted({s.location for s in catalogue.sites[trial.study]} | set(per_site) - {""})
    parameters += [{"name": "site", "part": [{"name": "site", "valueReference": {"reference": s}},
                                             _figure("may-be-eligible", per_site[s])]} for s in sites]
    if per_site[""]:
        parameters.append({"name": "site", "part": [
            {"name": "site", "valueString": "no recruiting site placed near the patient"},
            _figure("may-be-eligible", per_site[""])]})
    parameters += [{"name": "criterion", "part": [
        {"name": "key", "valueString": key}, {"name": "text", "valueString": texts[key]},
        *(_figure(v, per_criterion[key][v]) for v in ("met", "not-met", "unknown", "not-applicable"))]}
        for key in sorted(per_criterion, key=lambda k: [int(n) for n in k.split(".")])]
    for alias, result in sorted(candidates, key=lambda c: (RANK[c[1].verdict], -c[1].score, c[0])):
        parameters.append({"name": "candidate", "part": [
            {"name": "pseudonym", "valueString": alias},
            {"name": "verdict", "valueCoding": coding(VERDICT_SYSTEM, result.verdict)},
            {"name": "score", "valueDecimal": result.score},
            *({"name": "criterion", "part": [{"name": "key", "valueString": c.key},
                                             {"name": "verdict", "valueCoding": coding(VERDICT_SYSTEM, c.verdict)}]}
              for c in result.criteria)]})
    return {"resourceType": "Parameters", "parameter": parameters}
