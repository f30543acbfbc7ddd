"""A practitioner's agreement for a record they do not reach yet is a proposal the patient
confirms (docs/referrals.md, "Opening a patient record").

- `propose_if_unreached` (a Creator, services/context.py: asked first by every create): a
  practitioner's `patient-privacy` Consent naming them, for a patient outside their reach, is
  stored with status `proposed`, whatever status was sent, and grants nothing. In the same unit
  of work the patient gets a Communication (category `notification`, `about` the Consent)
  holding a one-time code (access/codes.py). The patient's existence is never looked up: the
  same writes happen (and so the same answer, in the same time) whether the patient exists or
  not; a notice to an id nobody holds reaches nobody. The practitioner's earlier proposal for
  that patient, still waiting, is superseded in the same unit of work: its code spent, its
  Consent marked SUPERSEDED.
- `confirm` (`POST Consent/{id}/$confirm`, parameter `code`): the practitioner the Consent
  names (or the patient) gives the code the patient received; the Consent becomes `active`.
  The patient may instead accept it in their portal (update it to `active`): a practitioner
  never changes a Consent (access/policy.py).

Every attempt is a request of the caller, audited with the Consent and so with its patient.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from .. import clock
from ..model.errors import Kind, fail
from ..model.ids import new_id
from ..services import crud, guard, platform_rules, server_writes
from ..services.context import Context, Payload
from ..services.server_writes import ServerWrite, as_server
from ..store.base import Version

SUPERSEDED = "entered-in-error"  # the status of a proposal its author replaced by a new one
NOTIFICATION = {"system": "http://terminology.hl7.org/CodeSystem/communication-category",
                "code": "notification"}


async def propose_if_unreached(ctx: Context, resource_type: str, payload: Payload) -> Version | None:
    """A create (services/context.py Creator): see the module docstring."""
    patient = platform_rules.unreached_patient(ctx, resource_type, payload.checked)
    if patient is None:
        return None
    guard.decision(ctx, "create", "Consent")  # the token must allow recording consents
    crud.check_resource(ctx, "Consent", payload)
    platform_rules.check_proposal_scope(payload.checked)
    await platform_rules.check_recorded_consent(ctx, payload.checked)  # an agreement, as sent
    id = new_id()
    # A copy: a transaction may run its entries twice (services/bundle.py), each from the
    # Consent as sent.
    proposal = {**payload.exact, "id": id, "status": "proposed"}
    writes = [ServerWrite(proposal)]
    superseded: list[str] = []
    if ctx.codes is not None:
        assert ctx.principal is not None
        asker = platform_rules.asker(ctx.principal)
        superseded = ctx.codes.pending(asker, patient)
        for reference in superseded:
            if (earlier := await _superseded(ctx, reference, patient)) is not None:
                writes.append(earlier)
        code, expires = ctx.codes.issue(f"Consent/{id}", asker, patient)
        writes.append(ServerWrite(_notice(ctx, patient, id, code, expires)))
    stored = (await server_writes.commit(ctx, writes))[0]
    if ctx.codes is not None:
        ctx.codes.spend(superseded)
    guard.note_asked(ctx, stored, proposal)  # the patient sees who asked
    return stored


async def _superseded(ctx: Context, reference: str, patient: str) -> ServerWrite | None:
    """The earlier proposal `reference` (`Consent/<id>`) of the same practitioner for
    `patient`, marked `entered-in-error` (to be ignored: neither the patient's refusal,
    `rejected`, nor a withdrawal, `inactive`); None once it is no longer proposed."""
    found = await ctx.store.read("Consent", reference.removeprefix("Consent/"))
    earlier = orjson.loads(found.body) if found is not None and found.body is not None else None
    if (found is None or earlier is None or earlier.get("status") != "proposed"
            or (earlier.get("patient") or {}).get("reference") != f"Patient/{patient}"):
        return None
    earlier.pop("meta", None)
    return ServerWrite({**earlier, "status": SUPERSEDED}, new=False, if_match=found.version)


def _notice(ctx: Context, patient: str, consent_id: str, code: str, expires: float) -> dict[str, Any]:
    """The message giving the patient the code (delivered by the notifications service)."""
    assert ctx.principal is not None
    until = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"{ctx.principal.fhir_user} asks to reach your health record as your physician. "
            f"If you agree, give them this code: {code} (valid until {until}), or accept the "
            "request in your portal. If you do not agree, do nothing: the request grants nothing.")
    return {"resourceType": "Communication", "id": new_id(), "status": "completed",
            "category": [{"coding": [NOTIFICATION]}], "subject": {"reference": f"Patient/{patient}"},
            "recipient": [{"reference": f"Patient/{patient}"}],
            "about": [{"reference": f"Consent/{consent_id}"}], "sent": clock.instant(),
            "payload": [{"contentString": text}]}


def _code(body: dict[str, Any]) -> str:
    """The `code` parameter of a (validated) Parameters resource."""
    given = [p.get("valueString") for p in body.get("parameter", []) if p.get("name") == "code"]
    if body.get("resourceType") != "Parameters" or len(given) != 1 or not isinstance(given[0], str):
        raise fail(Kind.INVALID, "required", "$confirm takes one 'code' parameter (valueString).",
                   expression="Parameters.parameter")
    return given[0].strip()


async def confirm(ctx: Context, consent_id: str, body: dict[str, Any]) -> Version:
    """`$confirm`: the Consent made active; NOT_FOUND for a Consent the caller may not
    confirm, CONFLICT when it is no longer proposed, FORBIDDEN for a code that does not
    prove the patient's agreement."""
    crud.check_id(consent_id)
    crud.check_resource(ctx, "Parameters", Payload(body, body))
    code = _code(body)
    found = await ctx.store.read("Consent", consent_id)
    consent = orjson.loads(found.body) if found is not None and found.body is not None else None
    if found is None or consent is None:
        raise guard.hidden("Consent", consent_id)
    # Every attempt reaches the patient's audit trail, one by a caller the Consent does not
    # name too (who sees no audit event of that patient, and the same 404 as for no Consent).
    guard.note_asked(ctx, found, consent)
    if not platform_rules.may_confirm(ctx, consent):
        raise guard.hidden("Consent", consent_id)
    if consent.get("status") != "proposed":
        raise fail(Kind.CONFLICT, "conflict", f"Consent/{consent_id} is {consent.get('status')}, "
                   "not proposed: there is nothing to confirm.")
    platform_rules.check_code(ctx, consent_id, code)
    consent.pop("meta", None)
    active = {**consent, "status": "active"}
    result = await crud.update(as_server(ctx), "Consent", consent_id, Payload(active, active),
                               if_match=found.version)
    assert result.version is not None
    return result.version
