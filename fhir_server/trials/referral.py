"""Referring a patient to a clinical trial, and the investigators' answers (docs/referrals.md).

- `refer` (`POST ResearchStudy/{id}/$refer`): a referring physician who reaches the patient,
  with the patient's sharing Consent in force, sends the frozen record (snapshot.py) to
  investigators (PractitionerRole, CareTeam or Group). One unit of work stores the frozen
  Bundle, the referral Communication (category referral, `about` the study, payload the
  Bundle, statusReason its outcome) and the ResearchSubject tracking the patient in the study.
- `answer_if_addressed` (an investigator's `POST Communication` with `inResponseTo` the
  referral, asked first by every create: services/crud.py): stored
  as an answer in the referral's thread, addressed to the physician; the referral's
  statusReason and status and the ResearchSubject's status follow, in the same unit.
- `summary` (`ResearchStudy/{id}/$referral-summary`): the referrals the caller may see for a
  study, counted by outcome.

The stored resources are written by the server itself: nobody can write a referral or an
answer directly (services/platform_rules.py), nor change a frozen record (access/policy.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from ..model import platform_codes as codes
from ..model.errors import Kind, fail
from ..model.ids import new_id
from ..search import parse_query
from ..services import crud, reach, sealed, server_writes
from ..services.context import Context, Payload
from ..services.guard import decision, hidden
from ..services.server_writes import ServerWrite, as_server
from ..store.base import Version
from .. import clock
from . import snapshot, thread

REFERRAL_IDENTIFIER = codes.REFERRAL_IDENTIFIER
ANSWERS = ("preselected", "not-preselected", "included", "not-included")
MAX_NOTE = 10_000


def _invalid(message: str, where: str | None = None) -> Exception:
    return fail(Kind.INVALID, "invalid", message, expression=where)


def _parameters(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """A (validated) Parameters resource's parameters by name."""
    found: dict[str, list[dict[str, Any]]] = {}
    for parameter in body.get("parameter", []):
        found.setdefault(parameter["name"], []).append(parameter)
    return found


def _reference(parameter: dict[str, Any], name: str) -> str:
    reference = (parameter.get("valueReference") or {}).get("reference")
    if not isinstance(reference, str) or reference.count("/") != 1:
        raise _invalid(f"Parameter '{name}' is a valueReference of the form Type/id.",
                       f"Parameters.parameter.where(name='{name}')")
    return reference


def _referrer(ctx: Context) -> str:
    """The physician referring: a practitioner user; a patient may only suggest."""
    principal = ctx.principal
    if principal is not None and principal.speaks_for_patient:
        raise fail(Kind.FORBIDDEN, "forbidden",
                   "A patient does not refer: suggest the trial to your referring physician "
                   "(a Communication of category trial-suggestion addressed to them).")
    if principal is None or principal.consented is None or principal.fhir_user is None:
        raise fail(Kind.FORBIDDEN, "forbidden", "Only a referring physician refers a patient.")
    return principal.fhir_user


async def refer(ctx: Context, study_id: str, body: dict[str, Any]) -> Version:
    """`$refer`: the stored referral Communication (see the module docstring)."""
    physician = _referrer(ctx)
    decision(ctx, "create", "Communication")
    if body.get("resourceType") != "Parameters":
        raise _invalid("The body is a Parameters resource.", "resourceType")
    crud.check_resource(ctx, "Parameters", Payload(body, body))
    params = _parameters(body)
    if len(params.get("patient", [])) != 1 or not params.get("recipient"):
        raise _invalid("$refer takes one 'patient' and at least one 'recipient'.", "Parameters")
    patient_ref = _reference(params["patient"][0], "patient")
    kind, _, patient = patient_ref.partition("/")
    if kind != "Patient":
        raise _invalid("'patient' references a Patient.")
    recipients = list(dict.fromkeys(_reference(p, "recipient") for p in params["recipient"]))
    notes = [p.get("valueString") for p in params.get("note", [])]
    if any(not isinstance(n, str) or not n.strip() or len(n) > MAX_NOTE for n in notes):
        raise _invalid(f"'note' is a valueString of 1 to {MAX_NOTE} characters.")
    if notes:
        sealed.refuse_plain(ctx, "Parameters.parameter.where(name='note')")
    sealed_notes = [p.get("valueAttachment") for p in params.get("sealedNote", [])]
    if not all(sealed.is_sealed(a) for a in sealed_notes):
        raise _invalid("'sealedNote' is a valueAttachment holding a JWE (docs/sealed-messages.md).")
    assert ctx.principal is not None and ctx.principal.consented is not None
    if patient not in ctx.principal.consented:
        raise hidden("Patient", patient)
    await crud.read(ctx, "ResearchStudy", study_id)  # 404 unless the caller sees it
    server = as_server(ctx)
    for recipient in recipients:
        if recipient.partition("/")[0] not in codes.RECIPIENT_TYPES or await reach.current(server, recipient) is None:
            raise fail(Kind.UNPROCESSABLE, "business-rule",
                       f"Recipient {recipient} is not a known PractitionerRole, CareTeam or Group.")
    consent = await reach.sharing_consent(server, patient)
    if consent is None:
        raise fail(Kind.FORBIDDEN, "forbidden",
                   "The patient has not agreed to sharing their record with trial investigators "
                   "(no research Consent in force): the referral is not sent.")
    await snapshot.check_recipients(server, patient, recipients)
    frozen = await snapshot.freeze(server, patient, new_id())
    sent = clock.instant()
    referral = {
        "resourceType": "Communication", "id": new_id(), "status": "in-progress",
        "statusReason": {"coding": [codes.coding(codes.OUTCOME_SYSTEM, "referred")]},
        "category": [{"coding": [codes.coding(codes.MESSAGE_SYSTEM, codes.REFERRAL)]}],
        "subject": {"reference": patient_ref},
        "about": [{"reference": f"ResearchStudy/{study_id}"}],
        "sent": sent, "sender": {"reference": physician},
        "recipient": [{"reference": r} for r in recipients],
        "payload": [{"contentReference": {"reference": f"Bundle/{frozen['id']}",
                                          "display": "Frozen record of the patient"}},
                    *({"contentString": n} for n in notes),
                    *({"contentAttachment": a} for a in sealed_notes)],
    }
    await sealed.check_sealed(ctx, "Communication", referral)
    subject = {
        "resourceType": "ResearchSubject", "id": new_id(), "status": "candidate",
        "identifier": [{"system": REFERRAL_IDENTIFIER, "value": referral["id"]}],
        "study": {"reference": f"ResearchStudy/{study_id}"},
        "individual": {"reference": patient_ref},
        "consent": {"reference": f"Consent/{consent['id']}"},
    }
    version = (await server_writes.commit(ctx, [ServerWrite(frozen), ServerWrite(referral),
                                                 ServerWrite(subject)]))[1]
    if await reach.sharing_consent(server, patient) is None:
        # The consent was withdrawn while the record was being frozen: the withdrawal hook
        # ran before this referral existed, so it is marked here.
        await withdraw(server, version)
        version = await ctx.store.read("Communication", version.id) or version
    return version


def _outcome(message: dict[str, Any]) -> str:
    answers = [c for c in codes.codes_of(message.get("reasonCode", []), codes.OUTCOME_SYSTEM)
               if c in ANSWERS]
    if len(answers) != 1:
        raise _invalid(f"An answer carries one reasonCode of {codes.OUTCOME_SYSTEM}: "
                       f"{', '.join(ANSWERS)}.", "Communication.reasonCode")
    return answers[0]


async def answer_if_addressed(ctx: Context, resource_type: str, payload: Payload) -> Version | None:
    """A create (services/context.py Creator): a Communication in response to a referral
    addressed to the caller is an investigator's answer (with an outcome) or question (without:
    thread.py), one from the physician who referred, in the referral's thread, a reply
    (thread.py); each stored as such; anything else is an ordinary write (None)."""
    if resource_type != "Communication" or not isinstance(payload.checked, dict):
        return None
    found = await _referral_answered(ctx, payload.checked)
    if found is None:
        return await thread.reply_if_threaded(ctx, resource_type, payload)
    if not codes.codes_of(payload.checked.get("reasonCode", []), codes.OUTCOME_SYSTEM):
        return await thread.ask(ctx, payload, *found)  # no outcome: a question
    return await _answer(ctx, payload, *found)


async def _referral_answered(ctx: Context, message: dict[str, Any]) -> tuple[Version, dict[str, Any], list[str]] | None:
    """The referral addressed to the caller that `message` responds to: its stored version,
    its content, and the caller's identities among its recipients."""
    principal = ctx.principal
    if principal is None or not principal.recipients:
        return None
    for thread in message.get("inResponseTo", []):
        reference = thread.get("reference") if isinstance(thread, dict) else None
        kind, _, id = reference.partition("/") if isinstance(reference, str) else ("", "", "")
        stored = await ctx.store.read(kind, id) if kind == "Communication" and id else None
        referral = orjson.loads(stored.body) if stored is not None and stored.body else {}
        addressed = [r["reference"] for r in referral.get("recipient", [])
                     if r.get("reference") in principal.recipients]
        if stored is not None and addressed and codes.has_code(
                referral.get("category", []), codes.MESSAGE_SYSTEM, codes.REFERRAL):
            return stored, referral, addressed
    return None


async def _answer(ctx: Context, payload: Payload, stored: Version, referral: dict[str, Any],
                  addressed: list[str]) -> Version:
    """Store an investigator's answer to `referral` and move the referral and its
    ResearchSubject on, in one unit of work."""
    crud.check_resource(ctx, "Communication", payload)
    message = payload.checked
    decision(ctx, "create", "Communication")  # the token must allow writing messages
    if len(message.get("inResponseTo", [])) != 1:
        raise _invalid("An answer has one inResponseTo: the referral (Communication/<id>).",
                       "Communication.inResponseTo")
    outcome = _outcome(message)
    texts = [p["contentString"] for p in message.get("payload", []) if "contentString" in p]
    if len(texts) != len(message.get("payload", [])) or any(len(t) > MAX_NOTE for t in texts):
        raise _invalid("An answer's payload is text only (contentString).", "Communication.payload")
    if codes.concepts(codes.OUTCOME_SYSTEM)[outcome]["needs-reason"] and not any(t.strip() for t in texts):
        raise _invalid(f"A '{outcome}' answer says why (payload contentString).",
                       "Communication.payload")
    sender = (message.get("sender") or {}).get("reference") or addressed[0]
    if sender not in addressed:
        raise fail(Kind.FORBIDDEN, "forbidden", f"{sender} is not a recipient of this referral.")
    if referral["status"] != "in-progress":
        why = "was withdrawn by the patient" if referral["status"] == "stopped" else "is closed"
        raise fail(Kind.CONFLICT, "conflict", f"This referral {why}; it takes no more answers.")
    stored_answer = {
        "resourceType": "Communication", "id": new_id(), "status": "completed",
        "category": [{"coding": [codes.coding(codes.MESSAGE_SYSTEM, codes.ANSWER)]}],
        "subject": referral["subject"], "about": referral.get("about", []),
        "inResponseTo": [{"reference": f"Communication/{stored.id}"}],
        "sent": clock.instant(), "sender": {"reference": sender}, "recipient": [referral["sender"]],
        "reasonCode": [{"coding": [codes.coding(codes.OUTCOME_SYSTEM, outcome)]}],
        **({"payload": [{"contentString": t} for t in texts]} if texts else {}),
    }
    writes = [ServerWrite(stored_answer), *_progress(referral, stored.version, outcome)]
    writes += await _subject_writes(ctx, stored.id, outcome)
    return (await server_writes.commit(ctx, writes))[0]


def _progress(referral: dict[str, Any], version: int, outcome: str) -> list[ServerWrite]:
    """The referral at `outcome` (pinned to the version read: a concurrent answer fails)."""
    final = codes.concepts(codes.OUTCOME_SYSTEM)[outcome]["final"]
    updated = {**referral, "statusReason": {"coding": [codes.coding(codes.OUTCOME_SYSTEM, outcome)]},
               "status": ("stopped" if outcome == "withdrawn" else "completed" if final
                          else "in-progress")}
    return [ServerWrite(updated, new=False, if_match=version)]


async def _subject_writes(ctx: Context, referral_id: str, outcome: str) -> list[ServerWrite]:
    """The ResearchSubject of a referral at `outcome`."""
    query, _ = parse_query("ResearchSubject", [("identifier", f"{REFERRAL_IDENTIFIER}|{referral_id}")],
                           ctx.registry)
    page = await ctx.store.search(query)
    writes = []
    for found in page.matches:
        subject = orjson.loads(found.body or b"{}")
        subject["status"] = codes.concepts(codes.OUTCOME_SYSTEM)[outcome]["research-subject-status"]
        writes.append(ServerWrite(subject, new=False, if_match=found.version))
    return writes


async def withdraw(ctx: Context, referral: Version) -> None:
    """Mark a referral whose sharing consent is withdrawn, its frozen record and its
    ResearchSubject (the server's own unit of work; the frozen content is left as it was)."""
    body = orjson.loads(referral.body or b"{}")
    writes = _progress(body, referral.version, "withdrawn")
    writes += await _subject_writes(ctx, referral.id, "withdrawn")
    for bundle_id in reach.snapshot_ids([body]):
        found = await ctx.store.read("Bundle", bundle_id)
        if found is None or found.body is None:
            continue
        frozen = orjson.loads(found.body)
        tags = frozen.setdefault("meta", {}).setdefault("tag", [])
        tags.append(codes.coding(codes.OUTCOME_SYSTEM, "withdrawn"))
        writes.append(ServerWrite(frozen, new=False, if_match=found.version))
    await server_writes.commit(ctx, writes)


async def summary(ctx: Context, study_id: str) -> dict[str, Any]:
    """`$referral-summary`: a Parameters resource counting the referrals to ResearchStudy/
    `study_id` that the caller may see, by outcome."""
    await crud.read(ctx, "ResearchStudy", study_id)
    allowed = decision(ctx, "search", "Communication")
    query, _ = parse_query("Communication", [
        ("about", f"ResearchStudy/{study_id}"),
        ("category", f"{codes.MESSAGE_SYSTEM}|{codes.REFERRAL}"), ("_count", "1000")], ctx.registry)
    query = allowed.confine(query)
    counts: Counter[str] = Counter()
    async for referral in reach.resources(ctx, query):
        counts.update(codes.codes_of(referral.get("statusReason", {}), codes.OUTCOME_SYSTEM))
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "study", "valueReference": {"reference": f"ResearchStudy/{study_id}"}},
            {"name": "total", "valueInteger": sum(counts.values())},
            *({"name": "outcome", "part": [
                {"name": "code", "valueCoding": codes.coding(codes.OUTCOME_SYSTEM, code)},
                {"name": "count", "valueInteger": counts[code]}]}
              for code in codes.concepts(codes.OUTCOME_SYSTEM)),
        ],
    }
