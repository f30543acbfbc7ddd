"""Pre-screening candidates of a trial: the pseudonym an investigator sees for a patient
whose Consent allows pre-screening for the study (trials/inverse.py), and the one thing the
investigator may do with it: ask the patient's referring physicians to refer them.

A pseudonym is an HMAC-SHA-256 of the study and the patient under the server's key
(`Context.pseudonym_key`, derived from the key ring; without encryption, a key drawn when the
process starts, so pseudonyms then hold for the life of the process): stable for one study,
unrelated across studies, and not computable from a guessed patient id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
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

_PROCESS_KEY = secrets.token_bytes(32)
REFERRAL_REQUEST = "referral-request"
MAX_NOTE = 10_000


def pseudonym(ctx: Context, study: str, patient: str) -> str:
    """The pseudonym of Patient/`patient` for ResearchStudy/`study`."""
    key = ctx.pseudonym_key or _PROCESS_KEY
    mac = hmac.new(key, f"{study}\x00{patient}".encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


async def ask_referral(ctx: Context, study_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """`POST ResearchStudy/{id}/$ask-referral`: an investigator who saw `candidate` (a
    pseudonym of the inverse match) asks that patient's referring physicians to consider
    referring them. The message (category `referral-request`) names the patient and goes to
    the physicians only: it carries no `sender`, so the investigator cannot read it back (the
    asker is named in its text). The answer says how many physicians were asked, never who
    the patient is. 404 for a pseudonym that names no patient allowing pre-screening for the
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
    physicians = sorted(await reach.physicians_of(server, patient))
    assert ctx.principal is not None
    asker = ctx.principal.fhir_user or ", ".join(ctx.principal.recipients or ()) or ctx.principal.client_id
    text = (f"{asker}, investigator of ResearchStudy/{study_id}, asks you to consider referring this "
            "patient: their consent allows pre-screening for this trial, and the computable criteria "
            "do not rule them out.")
    if physicians:
        request = {"resourceType": "Communication", "id": new_id(), "status": "completed",
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
