"""The operations of the trial referral workflow (profiles/OperationDefinition-*.json;
trials/referral.py and trials/proposal.py do the work)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ..services import crud
from ..trials import proposal, referral
from .auth import authenticate, context_of
from .headers import version_headers
from .negotiation import check_acceptable, fhir_response
from .routes import read_payload

router = APIRouter(dependencies=[Depends(authenticate)])


@router.post("/ResearchStudy/{id}/$refer")
async def refer(request: Request, id: str) -> Response:
    """Refer a patient to the trial: 201 with the referral Communication."""
    check_acceptable(request)
    crud.check_id(id)
    payload = await read_payload(request)
    version = await referral.refer(context_of(request), id, payload.checked)
    base = request.app.state.settings.base_url.rstrip("/")
    location = f"{base}/Communication/{version.id}/_history/{version.version}"
    return fhir_response(request, version.body, status=201,
                         headers=version_headers(version, location))


@router.get("/ResearchStudy/{id}/$referral-summary")
@router.post("/ResearchStudy/{id}/$referral-summary")
async def referral_summary(request: Request, id: str) -> Response:
    """The referrals to the trial the caller may see, counted by outcome."""
    check_acceptable(request)
    crud.check_id(id)
    return fhir_response(request, await referral.summary(context_of(request), id))


@router.post("/Consent/{id}/$confirm")
async def confirm_consent(request: Request, id: str) -> Response:
    """Confirm a proposed Consent with the patient's one-time code: 200 with the Consent."""
    check_acceptable(request)
    payload = await read_payload(request)
    version = await proposal.confirm(context_of(request), id, payload.checked)
    return fhir_response(request, version.body, headers=version_headers(version))
