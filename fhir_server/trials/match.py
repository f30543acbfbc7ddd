"""`POST [base]/ResearchStudy/$match`: the open trials a patient may join, best first, each
with its verdict, its nearest recruiting site and why, criterion by criterion
(docs/matching.md).

The patient is either a stored Patient the caller may read (`patient`; every resource read
goes through the service layer, so access applies and the request's AuditEvent names the
patient) or an anonymous profile (`bundle`, a `collection` Bundle holding one Patient and
resources about them), which is evaluated and never stored. Trials the caller may search are
filtered (status, phase, sites within `radius`), then ranked: eligible, undetermined, then
ineligible; by score, by distance, by id; the trials the index proves ineligible from the
diagnoses alone ("pruned") last, explained (evaluated) only when `count` reaches them. The
first `count` (default: the page size) are listed, whatever their verdict; the outcome
counts the trials evaluated, pruned, and the ineligible left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from .. import clock
from ..model.bundle import bundle
from ..model.errors import Issue
from ..model.ids import new_id
from ..model.outcome import operation_outcome
from ..services import crud, patient_record
from ..services.context import Context, Payload
from ..services.guard import Decision, decision
from . import match_catalogue, match_parameters
from .eligibility import INELIGIBLE, RANK, Trial, TrialResult, evaluate, pinned, read_record, verdict
from .eligibility_record import TYPES, Record
from .eligibility_rules import born_later
from .gazetteer import Point, place
from .match_parameters import MatchRequest, unprocessable
from .match_render import entry
from .match_sites import Site

MAX_WARNINGS = 100  # criterion warnings listed in the outcome, at most
# Trials one answer lists, at most, each explained criterion by criterion (anyone may ask,
# with no token: 5,000 explained trials were 0.8 s of CPU and 20 MB of JSON).
MOST_LISTED = 200


@dataclass(frozen=True, slots=True)
class Found:
    """A trial kept by the filters, with its verdict and score (an ineligible one: 0)."""

    trial: Trial
    verdict: str
    score: float
    site: Site | None
    distance: float | None

    @property
    def key(self) -> tuple[int, float, float, str]:
        return (RANK[self.verdict], -self.score,
                self.distance if self.distance is not None else float("inf"), self.trial.study)


def _about(resource: dict[str, Any], names: set[str]) -> bool:
    """Whether a resource's `subject` / `patient` names the profile's Patient."""
    for field in ("subject", "patient"):
        reference = (resource.get(field) or {}).get("reference")
        if isinstance(reference, str) and reference.split("/_history/")[0] in names:
            return True
    return False


def _anonymous(request_bundle: dict[str, Any], today: date) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """The (evidence reference, resource) pairs of an anonymous profile, and warnings. A
    profile born after `today` is refused: the caller's mistake, unlike a stored record's
    (whose age criteria are then unknown)."""
    if request_bundle.get("resourceType") != "Bundle" or request_bundle.get("type") != "collection":
        raise match_parameters.invalid("bundle", "a Bundle of type collection")
    entries = [e for e in request_bundle.get("entry", []) if isinstance(e.get("resource"), dict)]
    patients = [e for e in entries if e["resource"].get("resourceType") == "Patient"]
    if len(patients) != 1:
        raise unprocessable("bundle", f"holds {len(patients)} Patients; an anonymous profile "
                            "holds exactly one")
    patient = patients[0]
    birth = patient["resource"].get("birthDate")
    if isinstance(birth, str) and born_later(birth, today):
        raise unprocessable("bundle", f"the Patient's birthDate '{birth}' is in the future")
    id = patient["resource"].get("id")
    names = {n for n in (patient.get("fullUrl"), f"Patient/{id}" if id else None) if n}
    found, ignored = [], 0
    for n, item in enumerate(entries):
        resource = item["resource"]
        if resource.get("resourceType") not in TYPES:
            ignored += 1
            continue
        if resource["resourceType"] not in ("Patient", "Medication") and not _about(resource, names):
            raise unprocessable("bundle", f"entry {n} ({resource['resourceType']}) is not about "
                                "the profile's Patient (its subject or patient)")
        found.append((item.get("fullUrl") or pinned(resource), resource))
    warnings = [f"{ignored} entries of types matching does not read were ignored"] if ignored else []
    return found, warnings


async def _stored(ctx: Context, patient: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    record = await patient_record.read(ctx, patient, [t for t in TYPES if t != "Patient"])
    warnings = [f"The access token may not read {t}: criteria about it stay unknown."
                for t in record.unreadable]
    if record.truncated:
        warnings.append(f"The record holds more than {patient_record.MOST} resources; the rest was not read.")
    return [(pinned(r), r) for r in patient_record.bodies(record)], warnings


def _origin(request: MatchRequest, record: Record) -> Point | None:
    return request.origin if request.origin is not None else home(record)


def home(record: Record) -> Point | None:
    """Where the patient lives: the first of their addresses' postal codes the gazetteer knows."""
    addresses = record.patient.resource.get("address", []) if record.patient else []
    for address in addresses:
        postal = address.get("postalCode") if isinstance(address, dict) else None
        found = place(postal) if isinstance(postal, str) else None
        if found is not None:
            return found
    return None


def _phase_codes(study: dict[str, Any]) -> set[str]:
    return {c.get("code") for c in (study.get("phase") or {}).get("coding", []) if isinstance(c, dict)}


@dataclass(slots=True)
class Counts:
    evaluated: int = 0
    pruned: int = 0
    ineligible: int = 0  # evaluated ineligible
    ranked_ineligible: int = 0  # ineligible (evaluated or pruned) kept by the filters


@dataclass(frozen=True, slots=True)
class Page:
    """The first `limit` trials of the ranking, explained, and what the ranking holds."""

    listed: list[tuple[Found, TrialResult]]
    total: int  # trials ranked, whatever their verdict
    counts: Counts


def _admitted(request: MatchRequest, catalogue: match_catalogue.Catalogue, study: str,
              allowed: Decision) -> bool:
    """Kept by the study's filters: open (with `recruiting-only`), phase, the caller's access."""
    found = catalogue.studies[study]
    return not ((request.recruiting_only and not catalogue.accruing(study))
                or (request.phases and not _phase_codes(found) & request.phases)
                or not allowed.admits("ResearchStudy", found))


def _placed(request: MatchRequest, record: Record, catalogue: match_catalogue.Catalogue, study: str,
            origin: Point | None) -> tuple[Site | None, float | None] | None:
    """The nearest recruiting site and its distance; None when the site filters drop the trial."""
    if not _sited(request, record, catalogue, study):
        return None
    site, distance = catalogue.nearest(study, origin, record.today)
    if request.radius is not None and (distance is None or distance > request.radius):
        return None
    return site, distance


def _kept(request: MatchRequest, record: Record, catalogue: match_catalogue.Catalogue, study: str,
          origin: Point | None) -> bool:
    """Whether the site filters keep the trial: `_placed`, without a distance unless `radius`
    needs one (a trial that is not listed is only counted)."""
    if request.radius is not None:
        return _placed(request, record, catalogue, study, origin) is not None
    return _sited(request, record, catalogue, study)


def _sited(request: MatchRequest, record: Record, catalogue: match_catalogue.Catalogue, study: str) -> bool:
    """Kept by `recruiting-only` as far as sites go: some site recruiting, or no site with a
    status at all (and by `radius`: some site at all)."""
    sites = catalogue.sites[study]
    if not sites:
        return request.radius is None
    return not (request.recruiting_only and not catalogue.recruiting(study, record.today)
                and any(s.has_status for s in sites))  # every site closed, or its status stale


def _ineligible(request: MatchRequest, record: Record, catalogue: match_catalogue.Catalogue,
                origin: Point | None, studies: list[str], wanted: int) -> list[Found]:
    """The first `wanted` of ineligible `studies` the filters keep, by distance, by id (their
    score is 0). Ranked only when the answer reaches them: they are kept as bare ids, as a
    large catalogue holds thousands of them for one patient."""
    found = []
    for study in studies:
        placed = _placed(request, record, catalogue, study, origin)
        assert placed is not None  # kept by the filters
        found.append(Found(catalogue.trials[study], INELIGIBLE, 0.0, *placed))
    return sorted(found, key=lambda f: f.key)[:wanted]


def rank(request: MatchRequest, record: Record, catalogue: match_catalogue.Catalogue,
         allowed: Decision, origin: Point | None, limit: int) -> Page:
    """The trials kept by the filters, best first, the first `limit` explained (`evaluate`):
    the eligible and undetermined, the ineligible evaluated, then those the index prunes
    (never judged; explained only if `limit` reaches them)."""
    counts = Counts()
    found: list[Found] = []
    ineligible: list[str] = []
    keep, pruned = catalogue.index.candidates(record)
    # Counted as the evaluated are: among the trials the caller may see and the filters keep.
    admitted = [study for study in pruned if _admitted(request, catalogue, study, allowed)]
    counts.pruned = len(admitted)
    for trial in keep:
        if not _admitted(request, catalogue, trial.study, allowed):
            continue
        outcome, score = verdict(trial, record)  # explained below, for the trials listed only
        counts.evaluated += 1
        counts.ineligible += outcome == INELIGIBLE
        if outcome == INELIGIBLE:
            if _kept(request, record, catalogue, trial.study, origin):
                ineligible.append(trial.study)
        elif (placed := _placed(request, record, catalogue, trial.study, origin)) is not None:
            found.append(Found(trial, outcome, score, *placed))
    found.sort(key=lambda f: f.key)
    last = [study for study in admitted if _kept(request, record, catalogue, study, origin)]
    counts.ranked_ineligible = len(ineligible) + len(last)
    total = len(found) + counts.ranked_ineligible
    for lane in (ineligible, last):
        if len(found) < limit:
            found += _ineligible(request, record, catalogue, origin, lane, limit - len(found))
    return Page([(f, evaluate(f.trial, record)) for f in found[:limit]], total, counts)


async def match(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    """`$match`: the searchset Bundle described in the module docstring."""
    allowed = decision(ctx, "search", "ResearchStudy")
    if body.get("resourceType") != "Parameters":
        raise match_parameters.invalid("resourceType", "the body is a Parameters resource")
    crud.check_resource(ctx, "Parameters", Payload(body, body))
    request = match_parameters.read(body)
    most = min(ctx.max_page_size, MOST_LISTED)
    today = clock.now().date()
    if request.bundle is not None:
        entries, warnings = _anonymous(request.bundle, today)
    else:
        assert request.patient is not None
        entries, warnings = await _stored(ctx, request.patient)
    record = read_record(entries, today)
    origin = _origin(request, record)
    if request.radius is not None and origin is None:
        raise unprocessable("radius", "needs a place: give 'location' or a patient address with a postal code")
    if origin is None:
        warnings.append("No location (parameter 'location' or the patient's postal code): "
                        "results carry no distance.")
    if request.count is not None and request.count > most:
        warnings.append(f"'count' {request.count} is more than this server lists: {most} at most.")
    catalogue = await match_catalogue.load(ctx)
    page = rank(request, record, catalogue, allowed, origin,
                min(request.count or ctx.default_page_size, most))
    entries_out = [entry(ctx.base_url, catalogue.studies[f.trial.study], result, f.trial.groups,
                         f.site, f.distance) for f, result in page.listed]
    entries_out.append({"fullUrl": f"urn:uuid:{new_id()}",
                        "resource": operation_outcome(_issues(warnings, page, catalogue.max_age_days, most)),
                        "search": {"mode": "outcome"}})
    return bundle("searchset", entries_out, total=page.total)


def _issues(warnings: list[str], page: Page, max_age_days: int, most: int) -> list[Issue]:
    counts = page.counts
    unlisted = counts.ranked_ineligible - sum(f.verdict == INELIGIBLE for f, _ in page.listed)
    issues = [Issue(code="informational", severity="information", diagnostics=(
        f"Trials: {counts.evaluated} evaluated, {counts.pruned} proven ineligible by the index without "
        f"evaluation (an inclusion diagnosis the patient's recorded diagnoses miss), "
        f"{counts.ineligible} evaluated ineligible; {unlisted} ineligible trials not listed "
        f"(ranked after the last one listed: raise 'count', up to {most}, to see them)."))]
    issues += [Issue(code="incomplete", severity="warning", diagnostics=w) for w in warnings]
    unsited = sum(f.site is None for f, _ in page.listed)
    if unsited:
        issues.append(Issue(code="incomplete", severity="warning", diagnostics=(
            f"{unsited} trials have no recruiting site with a status confirmed in the last "
            f"{max_age_days} days: listed without a site.")))
    criterion_warnings = [f"ResearchStudy/{result.study}: {w}" for _, result in page.listed
                          for c in result.criteria for w in c.warnings()]
    issues += [Issue(code="not-supported", severity="warning", diagnostics=w)
               for w in criterion_warnings[:MAX_WARNINGS]]
    return issues
