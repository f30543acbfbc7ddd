"""The rest of a referral's thread (docs/referrals.md, "The referral thread"): investigators'
questions, the referring physician's replies, and the physician's updated copy of the record.

- `ask`: a message from a referral's recipient in response to the referral, with no outcome
  (no `reasonCode`), is a question: stored with category `question`, from the recipient
  identity, to the physician who referred (trials/referral.py routes it here).
- `reply_if_threaded`: a message from the physician who sent a referral, in response to the
  referral or to a question in its thread, is a reply: category `reply`, to the question's
  sender (or to every recipient of the referral).
- `send_update` (`POST Communication/{id}/$update-record`): the physician who referred sends
  an updated copy of the record. A new frozen Bundle is stored; the previous copies stay,
  tagged `superseded` (their versions kept); the referral's payload names the new copy first,
  the older ones after it; and a message of category `record-update` to the recipients, in
  the referral's thread, says so. Each is an ordinary server write, seen by every commit hook
  and by Subscriptions on Communication (the notification's delivery is theirs).

Everything is written by the server (nobody writes these kinds directly:
services/platform_rules.py), in one unit of work per call, on the request's audit trail.
"""

from __future__ import annotations

from typing import Any

import orjson

from .. import clock
from ..model import platform_codes as codes
from ..model.errors import Kind, fail
from ..model.ids import new_id
from ..services import crud, reach, server_writes
from ..services.context import Context, Payload
from ..services.guard import hidden
from ..services.server_writes import ServerWrite, as_server
from ..store.base import Version
from . import snapshot

QUESTION, REPLY, UPDATE, SUPERSEDED = "question", "reply", "record-update", "superseded"
MAX_TEXT = 10_000


def _texts(message: dict[str, Any], what: str) -> list[str]:
    """The text of a question or reply: contentString payloads only, at least one."""
    payload = message.get("payload", [])
    texts = [p["contentString"] for p in payload if isinstance(p.get("contentString"), str)]
    if (not texts or len(texts) != len(payload) or any(not t.strip() or len(t) > MAX_TEXT for t in texts)):
        raise fail(Kind.INVALID, "invalid", f"A {what} is text: payload contentString, 1 to "
                   f"{MAX_TEXT} characters each.", expression="Communication.payload")
    return texts


def _open(referral: dict[str, Any]) -> None:
    if referral.get("status") != "in-progress":
        why = "was withdrawn by the patient" if referral.get("status") == "stopped" else "is closed"
        raise fail(Kind.CONFLICT, "conflict", f"This referral {why}; its thread is closed.")


def _message(kind: str, referral: dict[str, Any], responds_to: str, sender: str,
             recipients: list[str], payload: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Communication", "id": new_id(), "status": "completed",
            "category": [{"coding": [codes.coding(codes.MESSAGE_SYSTEM, kind)]}],
            "subject": referral["subject"], "about": referral.get("about", []),
            "inResponseTo": [{"reference": responds_to}], "sent": clock.instant(),
            "sender": {"reference": sender}, "recipient": [{"reference": r} for r in recipients],
            "payload": payload}


async def ask(ctx: Context, payload: Payload, stored: Version, referral: dict[str, Any],
              addressed: list[str]) -> Version:
    """Store an investigator's question on `referral` (module docstring)."""
    crud.check_resource(ctx, "Communication", payload)
    message = payload.checked
    texts = _texts(message, "question")
    sender = (message.get("sender") or {}).get("reference") or addressed[0]
    if sender not in addressed:
        raise fail(Kind.FORBIDDEN, "forbidden", f"{sender} is not a recipient of this referral.")
    _open(referral)
    question = _message(QUESTION, referral, f"Communication/{stored.id}", sender,
                        [referral["sender"]["reference"]], [{"contentString": t} for t in texts])
    return (await server_writes.commit(ctx, [ServerWrite(question)]))[0]


async def _thread_of(ctx: Context, message: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """(reference answered, the message answered, its referral) when `message` responds to a
    referral or to a question of one that the caller sent; None otherwise."""
    principal = ctx.principal
    if principal is None or principal.fhir_user is None or principal.recipients:
        return None
    sender = (message.get("sender") or {}).get("reference")
    if sender is not None and sender != principal.fhir_user:
        return None  # sent in someone else's name: an ordinary write, which the rules refuse
    for thread in message.get("inResponseTo", []):
        answered = await reach.current(ctx, (thread or {}).get("reference", "")) \
            if str((thread or {}).get("reference", "")).startswith("Communication/") else None
        if answered is None:
            continue
        referral = answered
        if codes.has_code(answered.get("category", []), codes.MESSAGE_SYSTEM, QUESTION):
            referral = await reach.current(ctx, answered["inResponseTo"][0]["reference"]) or {}
        if (codes.has_code(referral.get("category", []), codes.MESSAGE_SYSTEM, codes.REFERRAL)
                and (referral.get("sender") or {}).get("reference") == principal.fhir_user):
            return thread["reference"], answered, referral
    return None


async def reply_if_threaded(ctx: Context, resource_type: str, payload: Payload) -> Version | None:
    """A create (services/context.py Creator): the referring physician's reply in a referral's
    thread, stored as such; None for anything else."""
    if (resource_type != "Communication" or not isinstance(payload.checked, dict)
            or codes.codes_of(payload.checked.get("reasonCode", []), codes.OUTCOME_SYSTEM)):
        return None  # an outcome is the recipients' to give (an ordinary write, refused)
    found = await _thread_of(ctx, payload.checked)
    if found is None:
        return None
    responds_to, answered, referral = found
    crud.check_resource(ctx, "Communication", payload)
    texts = _texts(payload.checked, "reply")
    _open(referral)
    await _still_reached(ctx, referral)
    if codes.has_code(answered.get("category", []), codes.MESSAGE_SYSTEM, QUESTION):
        recipients = [answered["sender"]["reference"]]
    else:
        recipients = [r["reference"] for r in referral.get("recipient", [])]
    assert ctx.principal is not None and ctx.principal.fhir_user is not None
    reply = _message(REPLY, referral, responds_to, ctx.principal.fhir_user, recipients,
                     [{"contentString": t} for t in texts])
    return (await server_writes.commit(ctx, [ServerWrite(reply)]))[0]


async def _still_reached(ctx: Context, referral: dict[str, Any]) -> str:
    """The referral's patient id, FORBIDDEN unless the caller still reaches them."""
    patient = referral["subject"]["reference"].removeprefix("Patient/")
    assert ctx.principal is not None
    if patient not in (ctx.principal.consented or ()):
        raise fail(Kind.FORBIDDEN, "forbidden", "You no longer reach this patient's record "
                   "(their consent naming you is not in force).")
    return patient


async def send_update(ctx: Context, referral_id: str) -> Version:
    """`$update-record` (module docstring): the referral as now stored."""
    crud.check_id(referral_id)
    principal = ctx.principal
    found = await ctx.store.read("Communication", referral_id)
    referral = orjson.loads(found.body) if found is not None and found.body is not None else None
    if (found is None or referral is None or principal is None or principal.fhir_user is None
            or not codes.has_code(referral.get("category", []), codes.MESSAGE_SYSTEM, codes.REFERRAL)
            or (referral.get("sender") or {}).get("reference") != principal.fhir_user):
        raise hidden("Communication", referral_id)  # only its sender knows it by this operation
    _open(referral)
    patient = await _still_reached(ctx, referral)
    server = as_server(ctx)
    if await reach.sharing_consent(server, patient) is None:
        raise fail(Kind.FORBIDDEN, "forbidden", "The patient's consent to sharing their record "
                   "with trial investigators is no longer in force: nothing is sent.")
    await snapshot.check_recipients(server, patient, [r["reference"] for r in referral.get("recipient", [])])
    frozen = await snapshot.freeze(server, patient, new_id())
    writes = [ServerWrite(frozen)]
    for bundle_id in reach.snapshot_ids([referral]):
        earlier = await ctx.store.read("Bundle", bundle_id)
        body = orjson.loads(earlier.body) if earlier is not None and earlier.body is not None else None
        if body is None:
            continue
        tags = body.setdefault("meta", {}).setdefault("tag", [])
        if not any(t.get("system") == codes.MESSAGE_SYSTEM and t.get("code") == SUPERSEDED for t in tags):
            tags.append(codes.coding(codes.MESSAGE_SYSTEM, SUPERSEDED))
            writes.append(ServerWrite(body, new=False, if_match=earlier.version))
    copy = {"contentReference": {"reference": f"Bundle/{frozen['id']}",
                                 "display": "Updated frozen record of the patient"}}
    kept = [p if "contentReference" not in p else {"contentReference": {
        **p["contentReference"], "display": "Superseded frozen record of the patient"}}
        for p in referral.get("payload", [])]
    referral.pop("meta", None)
    writes.append(ServerWrite({**referral, "payload": [copy, *kept]}, new=False, if_match=found.version))
    notice = _message(UPDATE, referral, f"Communication/{referral_id}", principal.fhir_user,
                      [r["reference"] for r in referral.get("recipient", [])],
                      [copy, {"contentString": "The referring physician sent an updated copy of "
                              "the record; it replaces the previous one."}])
    writes.append(ServerWrite(notice))
    versions = await server_writes.commit(ctx, writes)
    return next(v for v in versions if v.resource_type == "Communication" and v.id == referral_id)
