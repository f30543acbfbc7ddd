"""`POST [base]/ResearchStudy/{id}/$match`: the patients who may join one trial, as the caller
may know them (access/study_match.py; docs/matching.md, "Inverse match").

- A referring physician gets their consented patients: a `searchset` Bundle of Patient, best
  first, each with the same explanation `$match` gives (criterion by criterion, evidence,
  nearest recruiting site). Every record is read with the physician's own access
  (services/patient_record.py).
- An investigator gets counts only, as a Parameters resource: how many patients may be
  eligible, per site and per criterion, among the patients the platform holds with their
  agreement and who have not objected, each a multiple of 5 under disclosure control and
  refreshed once a day (inverse_counts.py). A patient whose active Consent allows
  pre-screening for this very study appears as a pseudonym (keyed by the server, stable per
  study), with verdicts and no evidence: a pseudonym opens nothing; the record reaches an
  investigator only when a physician refers the patient.
- Anyone else gets the answer a study that does not exist gets (404).

The records are read as the server for the counts; every patient whose record a call reads
(counted by the day's first call, listed, or a pre-screening candidate) is noted on the
request's audit trail, so the AuditEvent names each patient the call touched
(inverse_counts.figures: a call served from the day's figures reads no record).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from .. import clock
from ..model.bundle import bundle
from ..model.errors import FhirError, Issue, Kind
from ..model.ids import new_id
from ..model.outcome import operation_outcome
from ..services import crud, patient_record, study_access
from ..services.context import Context, Payload
from ..services.guard import hidden
from ..services.server_writes import as_server
from . import consents_kept, inverse_counts, match_catalogue, match_parameters
from .eligibility import INELIGIBLE, RANK, Trial, TrialIndex, TrialResult, evaluate, pinned, read_record
from .eligibility_record import TYPES, Record
from .match import home
from .match_render import coding, result_extension
from .eligibility_codes import VERDICT_SYSTEM
from .prescreening import pseudonym, pseudonym_key

NAMES = ("count",)
_READ = [t for t in TYPES if t != "Patient"]  # the types of a record read after its Patient


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
    return _evaluated(index, trial, patient, await patient_record.read(ctx, patient, _READ), today)


def _evaluated(index: TrialIndex, trial: Trial, patient: str, record: patient_record.PatientRecord,
               today: date) -> Evaluated:
    entries = [(pinned(r), r) for r in patient_record.bodies(record)]
    return _judge(index, trial, patient, read_record(entries, today), record.unreadable)


async def _patients(ctx: Context, trial: Trial, catalogue: match_catalogue.Catalogue, today: date,
                    count: int | None) -> dict[str, Any]:
    """The physician's view: their consented patients who may be eligible, explained."""
    assert ctx.principal is not None and ctx.principal.consented is not None
    index = TrialIndex([trial])
    # Those deleted since the consent was given are left out.
    records = await patient_record.read_all(ctx, sorted(ctx.principal.consented), _READ)
    found = [_evaluated(index, trial, patient, record, today) for patient, record in records.items()]
    unreadable = {t for f in found for t in f.unreadable}
    listed = sorted((f for f in found if f.result is not None and f.result.verdict != INELIGIBLE),
                    key=lambda f: (*f.result.rank[:2], f.patient))  # type: ignore[union-attr]
    shown = listed[:count or ctx.default_page_size]
    entries = []
    for item in shown:
        assert item.result is not None and item.record.patient is not None
        site, distance = catalogue.nearest(trial.study, home(item.record), today)
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


async def _counts(ctx: Context, trial: Trial, catalogue: match_catalogue.Catalogue,
                  today: date) -> dict[str, Any]:
    """The investigator's view: the day's figures (inverse_counts.py), and the pseudonyms of
    the pre-screening candidates, read live so that a withdrawal takes effect at once."""
    key = pseudonym_key(ctx)
    study = f"ResearchStudy/{trial.study}"
    parameters = [{"name": "study", "valueReference": {"reference": study}},
                  *inverse_counts.parameters(await inverse_counts.figures(ctx, trial, catalogue, today, key))]
    server = as_server(ctx)
    agreements = await consents_kept.agreements(ctx)
    index = TrialIndex([trial])
    candidates: list[tuple[str, TrialResult]] = []
    for patient in agreements.prescreened(study, today.isoformat()):
        try:
            item = await evaluated(server, index, trial, patient, today)
        except FhirError as exc:
            if exc.kind in (Kind.NOT_FOUND, Kind.GONE):  # the Patient is deleted
                continue
            raise
        if item.result is not None and item.result.verdict != INELIGIBLE:
            candidates.append((pseudonym(ctx, trial.study, patient), item.result))
    for alias, result in sorted(candidates, key=lambda c: (RANK[c[1].verdict], -c[1].score, c[0])):
        parameters.append({"name": "candidate", "part": [
            {"name": "pseudonym", "valueString": alias},
            {"name": "verdict", "valueCoding": coding(VERDICT_SYSTEM, result.verdict)},
            {"name": "score", "valueDecimal": result.score},
            *({"name": "criterion", "part": [{"name": "key", "valueString": c.key},
                                             {"name": "verdict", "valueCoding": coding(VERDICT_SYSTEM, c.verdict)}]}
              for c in result.criteria)]})
    return {"resourceType": "Parameters", "parameter": parameters}
