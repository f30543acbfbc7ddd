"""Pre-screening candidates of a trial: the pseudonym an investigator sees for a patient
whose Consent allows pre-screening for the study (trials/inverse.py), and the one thing the
investigator may do with it: ask the patient's referring physicians to refer them.

A pseudonym is an HMAC-SHA-256 of the investigator asking, the study and the patient under
the key ring's pseudonym key (`Context.pseudonym_key`): stable for one investigator and one
study, unrelated across studies and across investigators (two investigators cannot tell they
see the same patient), and not computable from a guessed patient id. Without a key ring there
are no pseudonyms (nor counts): 501.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from .. import clock
from ..model import platform_codes as codes
from ..model.errors import Issue, Kind, fail
from ..model.ids import new_id
from ..model.outcome import operation_outcome
from ..services import crud, reach, server_writes, study_access
from ..services.context import Context, Payload
from ..services.guard import hidden
from ..services.server_writes import ServerWrite, as_server
from . import match_parameters

REFERRAL_REQUEST = "referral-request"
REQUEST_IDENTIFIER = f"{codes.CANONICAL}/NamingSystem/referral-request"
MAX_NOTE = 2_000  # characters of an investigator's note to physicians they do not know


def pseudonym_key(ctx: Context) -> bytes:
    """The key ring's pseudonym key; NOT_SUPPORTED on a server without a key ring."""
    if ctx.pseudonym_key is None:
        raise fail(Kind.NOT_SUPPORTED, "not-supported", "Pre-screening needs the server's key ring "
                   "(encryption on): without it no pseudonym nor count is given.")
    return ctx.pseudonym_key


def investigator(ctx: Context) -> str:
    """The investigator asking: their Practitioner, or the site system's client id."""
    assert ctx.principal is not None
    return ctx.principal.fhir_user or f"client:{ctx.principal.client_id}"


def pseudonym(ctx: Context, study: str, patient: str) -> str:
    """The pseudonym of Patient/`patient` for ResearchStudy/`study`, as the caller sees it."""
    message = "\x00".join((investigator(ctx), study, patient)).encode()
    mac = hmac.new(pseudonym_key(ctx), message, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


async def ask_referral(ctx: Context, study_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """`POST ResearchStudy/{id}/$ask-referral`: an investigator who saw `candidate` (a
    pseudonym of the inverse match) asks that patient's referring physicians to consider
    referring them. The message (category `referral-request`) names the patient and goes to
    the physicians only: it carries no `sender`, so the investigator cannot read it back (the
    asker is named in its text). The answer says how many physicians were asked, never who
    the patient is. An investigator asks once per study and patient: asking again sends
    nothing (the answer says so). 404 for a pseudonym that names no patient allowing pre-screening for the
    study, and for callers other than investigators (as for a missing study)."""
    if await study_access.visible(ctx, study_id) is not study_access.View.COUNTS:
        raise hidden("ResearchStudy", study_id)
    if body.get("resourceType") != "Parameters":
        raise match_parameters.invalid("resourceType", "the body is a Parameters resource")
    crud.check_resource(ctx, "Parameters", Payload(body, body))
    values: dict[str, str] = {}
    for parameter in body.get("parameter", []):
        name, value = parameter.get("name"), parameter.get("valueString")
        if name not in ("candidate", "note") or name in values:
            raise match_parameters.invalid(str(name), "$ask-referral takes one 'candidate' and at most one 'note'")
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_NOTE:
            raise match_parameters.invalid(str(name), f"a valueString of 1 to {MAX_NOTE} characters")
        values[name] = value
    if "candidate" not in values:
        raise match_parameters.invalid("candidate", "the pseudonym the inverse $match gave")
    await crud.read(ctx, "ResearchStudy", study_id)
    server = as_server(ctx)
    day = clock.today()
    found = await study_access.agreements(server)
    patient = next((id for id in sorted(found) if study_access.prescreened(
        found, id, f"ResearchStudy/{study_id}", day)
        and hmac.compare_digest(pseudonym(ctx, study_id, id), values["candidate"])), None)
    if patient is None:
        raise fail(Kind.NOT_FOUND, "not-found", "No pre-screening candidate has this pseudonym for "
                   f"ResearchStudy/{study_id}.", expression="Parameters.parameter.where(name='candidate')")
    alias = values["candidate"]
    if await reach.find(server, "Communication", [("identifier", f"{REQUEST_IDENTIFIER}|{alias}")]):
        return operation_outcome([Issue(code="informational", severity="information", diagnostics=(
            "You already asked for this candidate of this study; nothing new was sent."))])
    physicians = sorted(await reach.physicians_of(server, patient))
    text = (f"{investigator(ctx)}, investigator of ResearchStudy/{study_id}, asks you to consider referring "
            "this patient: their consent allows pre-screening for this trial, and the computable criteria "
            "do not rule them out.")
    if physicians:
        request = {"resourceType": "Communication", "id": new_id(), "status": "completed",
                   # one request per investigator, study and patient: the caller's pseudonym
                   "identifier": [{"system": REQUEST_IDENTIFIER, "value": alias}],
                   "category": [{"coding": [codes.coding(codes.MESSAGE_SYSTEM, REFERRAL_REQUEST)]}],
                   "subject": {"reference": f"Patient/{patient}"},
                   "about": [{"reference": f"ResearchStudy/{study_id}"}], "sent": clock.instant(),
                   "recipient": [{"reference": p} for p in physicians],
                   "payload": [{"contentString": text},
                               *([{"contentString": values["note"]}] if "note" in values else [])]}
        await server_writes.commit(ctx, [ServerWrite(request)])
    return operation_outcome([Issue(code="informational", severity="information", diagnostics=(
        f"{len(physicians)} referring physician(s) asked." if physicians else
        "The patient has no referring physician to ask today; nothing was sent."))])
