"""The frozen record a referral carries: the patient's record as it is when the referral is
sent, in a `collection` Bundle whose references between its entries are pinned to the
versions frozen (`Condition.subject` = `Patient/1/_history/3`), so that it says exactly what
the investigators were shown, whatever happens to the live record afterwards.
"""

from __future__ import annotations

import uuid
from typing import Any


from ..model import platform_codes as codes
from ..model.errors import Kind, fail
from ..search import Clause, Query, ReferencePredicate, Registry, TokenPredicate
from ..services.bundle import reference_holders
from ..services import reach
from ..services.context import Context
from .. import clock

# The clinical content an investigator needs to preselect a patient; consents, messages,
# audit and billing stay out.
TYPES = (
    "Patient", "Condition", "Observation", "Procedure", "DiagnosticReport", "Specimen",
    "MedicationStatement", "MedicationRequest", "MedicationAdministration", "Immunization",
    "AllergyIntolerance", "FamilyMemberHistory", "CarePlan", "ClinicalImpression",
    "ImagingStudy", "DocumentReference", "Encounter",
)  # fmt: skip
MOST = 20_000  # entries in one frozen record, at most
PAGE = 1000


def subject_clause(registry: Registry, resource_type: str, patient: str) -> Clause:
    """Resources of `resource_type` *about* Patient/`patient` (its `patient` or `subject`), not
    every resource of its compartment: an Observation another patient performed, or a linked
    Patient, is not this patient's to share."""
    if resource_type == "Patient":
        return Clause((TokenPredicate("_id", None, patient),))
    codes = registry.patient_compartment(resource_type)
    about: list[str] = [code for code in ("patient", "subject") if code in codes] or list(codes)
    return Clause(tuple(ReferencePredicate(code, "Patient", patient) for code in about))


async def _about(ctx: Context, resource_type: str, patient: str) -> list[dict[str, Any]]:
    """Every current resource of `resource_type` about Patient/`patient`."""
    query = Query(resource_type, (subject_clause(ctx.registry, resource_type, patient),), count=PAGE)
    found: list[dict[str, Any]] = []
    async for resource in reach.resources(ctx, query):
        found.append(resource)
        if len(found) > MOST:
            break
    return found


def pin(resources: list[dict[str, Any]]) -> None:
    """Point the references between `resources` at the versions they hold."""
    versions = {f"{r['resourceType']}/{r['id']}": r.get("meta", {}).get("versionId")
                for r in resources}
    for resource in resources:
        for holder in reference_holders(resource):
            target = holder["reference"]
            version = versions.get(target)
            if version:
                holder["reference"] = f"{target}/_history/{version}"


async def freeze(ctx: Context, patient: str, id: str) -> dict[str, Any]:
    """The frozen record of Patient/`patient`, as Bundle/`id` (not stored yet)."""
    resources: list[dict[str, Any]] = []
    for resource_type in TYPES:
        resources += await _about(ctx, resource_type, patient)
        if len(resources) > MOST:
            raise fail(Kind.UNPROCESSABLE, "too-costly",
                       f"The record holds more than {MOST} resources; a referral cannot carry it.")
    pin(resources)
    return {
        "resourceType": "Bundle",
        "id": id,
        "meta": {"tag": [codes.coding(codes.MESSAGE_SYSTEM, codes.SNAPSHOT)]},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        "type": "collection",
        "timestamp": clock.instant(),
        "entry": [{"fullUrl": f"{ctx.base_url}/{r['resourceType']}/{r['id']}", "resource": r}
                  for r in resources],
    }


async def check_recipients(ctx: Context, patient: str, recipients: list[str]) -> None:
    """FORBIDDEN, nothing sent to anyone, when a research Consent of the patient in force
    denies one of `recipients` their record ($refer and $update-record alike)."""
    refused = await reach.refused_recipients(ctx, patient, recipients)
    if refused:
        raise fail(Kind.FORBIDDEN, "forbidden", "The patient's research Consent refuses their record to "
                   f"{', '.join(refused)}: nothing is sent.")
