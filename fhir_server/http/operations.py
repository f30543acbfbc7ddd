"""The operations of the trial referral workflow and of trial matching
(profiles/OperationDefinition-*.json; trials/referral.py, trials/proposal.py and
trials/match.py do the work)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ..search import query_pairs
from ..model.errors import Kind, fail
from ..services import crud, erase, validate
from ..trials import (candidates, catalogue, criteria_review, inverse, match, match_parameters, prescreening,
                      proposal, referral, thread)
from .auth import authenticate, context_of
from .errors import not_allowed
from .headers import prefer, version_headers
from .negotiation import NDJSON_TYPES, check_acceptable, empty_response, fhir_response, media_type, read_body
from .routes import read_payload
from ..store.base import Version

router = APIRouter(dependencies=[Depends(authenticate)])


@router.post("/ResearchStudy/{id}/$refer")
async def refer(request: Request, id: str) -> Response:
    """Refer a patient to the trial: 201 with the referral Communication."""
    check_acceptable(request)
    crud.check_id(id)
    payload = await read_payload(request)
    return _created(request, await referral.refer(context_of(request), id, payload.checked))


def _stored(request: Request, version: Version) -> Response:
    """200 with a resource an operation stored, its ETag and Last-Modified."""
    return fhir_response(request, version.body, headers=version_headers(version))


def _created(request: Request, version: Version) -> Response:
    """201 with the resource an operation created, its Location and ETag."""
    base = request.app.state.settings.base_url.rstrip("/")
    location = f"{base}/{version.resource_type}/{version.id}/_history/{version.version}"
    return fhir_response(request, version.body, status=201, headers=version_headers(version, location))


@router.post("/ResearchStudy/$load")
async def load_trials(request: Request) -> Response:
    """Store the trials of a Bundle, or of NDJSON lines, in the catalogue: 200 with the outcomes."""
    check_acceptable(request)
    if media_type(request.headers.get("content-type")) in NDJSON_TYPES:
        lines = await read_body(request, request.app.state.settings.max_body_bytes, ndjson=True)
        return fhir_response(request, await catalogue.load_ndjson(context_of(request), lines))
    payload = await read_payload(request)
    return fhir_response(request, await catalogue.load(context_of(request), payload.checked, payload.depth))


@router.get("/ResearchStudy/{id}/$referral-summary")
@router.post("/ResearchStudy/{id}/$referral-summary")
async def referral_summary(request: Request, id: str) -> Response:
    """The referrals to the trial the caller may see, counted by outcome."""
    check_acceptable(request)
    crud.check_id(id)
    return fhir_response(request, await referral.summary(context_of(request), id))


@router.post("/Communication/{id}/$update-record")
async def update_record(request: Request, id: str) -> Response:
    """The referring physician sends an updated copy of the record: 200 with the referral."""
    check_acceptable(request)
    return _stored(request, await thread.send_update(context_of(request), id))


@router.post("/ResearchStudy/{id}/$draft-criteria")
async def draft_criteria(request: Request, id: str) -> Response:
    """Draft the trial's computable criteria from its free text: 201 with the draft Group."""
    check_acceptable(request)
    crud.check_id(id)
    payload = await read_payload(request)
    return _created(request, await criteria_review.draft(context_of(request), id, payload.checked))


@router.post("/Group/{id}/$approve-criteria")
async def approve_criteria(request: Request, id: str) -> Response:
    """A person approves drafted criteria: 200 with the Group, now read by matching."""
    check_acceptable(request)
    return _stored(request, await criteria_review.approve(context_of(request), id))


@router.post("/Consent/{id}/$confirm")
async def confirm_consent(request: Request, id: str) -> Response:
    """Confirm a proposed Consent with the patient's one-time code: 200 with the Consent."""
    check_acceptable(request)
    payload = await read_payload(request)
    return _stored(request, await proposal.confirm(context_of(request), id, payload.checked))


async def _reason(request: Request) -> str | None:
    """$erase's `reason`: a Parameters body's, else the query string's."""
    if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
        body = (await read_payload(request)).checked
        if body.get("resourceType") != "Parameters":
            raise fail(Kind.INVALID, "structure", "The body of $erase must be a Parameters resource.")
        return next((p.get("valueString") for p in body.get("parameter") or ()
                     if isinstance(p, dict) and p.get("name") == "reason"), None)
    return next((v for k, v in query_pairs(request.scope["query_string"]) if k == "reason"), None)


@router.post("/Patient/{id}/$erase")
@router.post("/Patient/{id}/$purge")  # R6's name
async def erase_patient(request: Request, id: str) -> Response:
    """Erase the patient's record for good: 200 with what was removed, or 202 and the URL to
    poll (Content-Location) under `Prefer: respond-async`."""
    check_acceptable(request)
    ctx = context_of(request)
    reason = await erase.begin(ctx, id, await _reason(request))
    address = request.client.host if request.client else None
    if prefer(request, "respond-async") is None:
        return fhir_response(request, await erase.erase(ctx, id, reason, address=address))
    job = await erase.start(ctx, id, reason, address=address)
    base = request.app.state.settings.base_url.rstrip("/")
    return empty_response(202, {"Content-Location": f"{base}/$erase-status/{job}"})


@router.get("/$erase-status/{job}")
async def erase_status(request: Request, job: str) -> Response:
    """An asynchronous erasure: 202 while it runs, then its outcome."""
    check_acceptable(request)
    output = await erase.status(context_of(request), job)
    if output is None:
        return empty_response(202, {"X-Progress": "erasing", "Retry-After": "1"})
    return fhir_response(request, output)


@router.post("/ResearchStudy/$match")
async def match_trials(request: Request) -> Response:
    """The trials a patient (stored, or an anonymous profile) may join: a searchset Bundle."""
    check_acceptable(request)
    payload = await read_payload(request)
    match_parameters.check_size(payload.checked)  # before validating what it limits
    return fhir_response(request, await match.match(context_of(request), payload.checked))


# POST only ($match's inputs are a Reference or a Resource, which a query string cannot carry;
# $load changes the catalogue): 405 rather than a read of id "$match" or a compartment search.
for _path in ("/ResearchStudy/$match", "/ResearchStudy/{id}/$match", "/ResearchStudy/$load"):
    router.add_api_route(_path, not_allowed, methods=["GET", "PUT", "PATCH", "DELETE"])


@router.post("/ResearchStudy/{id}/$match")
async def match_patients(request: Request, id: str) -> Response:
    """The patients who may join the trial, as the caller may know them (trials/inverse.py)."""
    check_acceptable(request)
    crud.check_id(id)
    payload = await read_payload(request)
    return fhir_response(request, await inverse.match(context_of(request), id, payload.checked))


@router.post("/ResearchStudy/{id}/$ask-referral")
async def ask_referral(request: Request, id: str) -> Response:
    """An investigator asks a pre-screening candidate's physicians to refer them: 200."""
    check_acceptable(request)
    crud.check_id(id)
    payload = await read_payload(request)
    return fhir_response(request, await prescreening.ask_referral(context_of(request), id, payload.checked))


@router.post("/ResearchStudy/{id}/$save-match")
async def save_match(request: Request, id: str) -> Response:
    """Keep a patient as a potential candidate: 201 with the ResearchSubject (200 with the
    one already there)."""
    check_acceptable(request)
    crud.check_id(id)
    payload = await read_payload(request)
    result = await candidates.save(context_of(request), id, payload.checked)
    version = result.version
    assert version is not None
    return _created(request, version) if result.outcome == "created" else _stored(request, version)


# $validate takes a resource (or a stored one's id and mode): POST only, 405 rather than a
# read of id "$validate".
for _path in ("/{resource_type}/$validate", "/{resource_type}/{id}/$validate"):
    router.add_api_route(_path, not_allowed, methods=["GET", "PUT", "PATCH", "DELETE"])


@router.post("/{resource_type}/$validate")
@router.post("/{resource_type}/{id}/$validate")
async def validate_resource(request: Request, resource_type: str, id: str | None = None) -> Response:
    """Validate a resource (or a stored one's update or deletion): 200 with every issue."""
    check_acceptable(request)
    # mode=delete needs no resource: an empty body is no resource, not malformed JSON.
    body = (await read_payload(request)).checked if (await request.body()).strip() else None
    query = query_pairs(request.scope["query_string"])
    outcome = await validate.validate(context_of(request), resource_type, id, body, query)
    return fhir_response(request, outcome)
