"""The register of disclosures to authorities (a court, the police, a health authority): who
asked, on what legal basis, what was given, about whom. Each one a Task kept in the store
like any resource (so sealed like one), written by the operator's `fhir-server disclosure`.

A Task of the register: `code` `disclosure` (REGISTER_SYSTEM), `for` the patient, `requester`
who asked (as text), `reasonCode` the legal basis, `description` what was given and an
`output` per resource given, `authoredOn` the day. The patient sees it only when the law
allows: the operator says so per disclosure (tag PATIENT_VISIBLE), and the access rules
(access/policy.py) hide every other one from everyone but administrators."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

from ..model.platform_codes import DISCLOSURE, PATIENT_VISIBLE, REGISTER_SYSTEM
from ..services import erase, reach, server_writes
from ..services.kept_registers import SUBJECT_ERASED
from ..services.context import Context
from .register import RegisterError, check_past, require

GIVEN = "disclosed"
MAX_TEXT = 2000  # characters of each free text


def _text(value: str, what: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_TEXT:
        raise RegisterError(f"{what} is 1 to {MAX_TEXT} characters")
    return value


async def _given(ctx: Context, reference: str, patient: str) -> dict[str, Any]:
    """An `output` naming a resource given, which must be the patient's."""
    resource = await reach.current(ctx, reference) if reference.count("/") == 1 else None
    if resource is None:
        raise RegisterError(f"no resource {reference}")
    if patient.removeprefix("Patient/") not in reach.patients_of_resource(ctx, resource):
        raise RegisterError(f"{reference} is not {patient}'s")
    return {"type": {"coding": [{"system": f"{REGISTER_SYSTEM}-step", "code": GIVEN}]},
            "valueReference": {"reference": reference}}


async def add(ctx: Context, *, patient: str, requester: str, legal_basis: str, given: str,
              resources: Sequence[str] = (), visible: bool = False,
              on: date, ledger: erase.ErasureLedger | None = None) -> dict[str, Any]:
    """Register what was disclosed about `patient` on `on`; the Task stored. No erasure on
    `ledger` (default: the context's) runs meanwhile: it would take the Task uncopied."""
    requester, legal_basis, given = (_text(requester, "who asked (--requester)"),
                                     _text(legal_basis, "the legal basis (--legal-basis)"),
                                     _text(given, "what was given (--given)"))
    check_past(on, "a disclosure on")
    async with erase.held_off(ledger or (ctx.erasures.ledger if ctx.erasures else None)):
        return await _added(ctx, patient, requester, legal_basis, given, resources, visible, on)


async def _added(ctx: Context, patient: str, requester: str, legal_basis: str, given: str,
                 resources: Sequence[str], visible: bool, on: date) -> dict[str, Any]:
    await require(ctx, patient, "Patient")
    outputs = [await _given(ctx, reference, patient) for reference in dict.fromkeys(resources)]
    task: dict[str, Any] = {
        "resourceType": "Task", "id": str(uuid.uuid4()), "status": "completed", "intent": "order",
        "code": {"coding": [{"system": REGISTER_SYSTEM, "code": DISCLOSURE}],
                 "text": "disclosure to an authority"},
        "for": {"reference": patient}, "requester": {"display": requester},
        "reasonCode": {"text": legal_basis}, "description": given,
        "authoredOn": on.isoformat(), "lastModified": on.isoformat()}
    if outputs:
        task["output"] = outputs
    if visible:
        task["meta"] = {"tag": [{"system": REGISTER_SYSTEM, "code": PATIENT_VISIBLE}]}
    await server_writes.commit(ctx, [server_writes.ServerWrite(task)])
    return task


async def of_patient(ctx: Context, patient: str) -> list[dict[str, Any]]:
    """The disclosures about `patient`, oldest first."""
    await require(ctx, patient, "Patient")
    found = await reach.find(ctx, "Task", [("code", f"{REGISTER_SYSTEM}|{DISCLOSURE}"),
                                           ("patient", patient)])
    return sorted(found, key=lambda task: (task["authoredOn"], task["id"]))


async def of_erased(ctx: Context) -> list[dict[str, Any]]:
    """The disclosures kept after their patients' erasure (services/kept_registers.py),
    oldest first."""
    found = [task async for task in reach.matching(ctx, "Task", [
        ("code", f"{REGISTER_SYSTEM}|{DISCLOSURE}"), ("_tag", f"{REGISTER_SYSTEM}|{SUBJECT_ERASED}")])]
    return sorted(found, key=lambda task: (task["authoredOn"], task["id"]))
