"""Access decisions for every interaction, from the caller's SMART scopes (deny by default).

- `system/` scopes (backend services) reach every resource of the types they name.
- `patient/` scopes reach the launch patient's compartment only (compartmentdefinition-patient);
  a relative's, only the types and actions the patient's delegation names (delegation.py);
  types outside any patient compartment (Practitioner, ResearchStudy, ...) are not patient data
  and are reached as named. Searches are confined *inside the query* (the compartment clause is
  ANDed to it before paging), so nothing of another patient can come back, through `_include`
  either: included resources pass `may_see` one by one.
- `user/` scopes of a practitioner reach the compartments of the patients whose privacy
  Consent in force names them (access/consent.py says when; services/reach.py finds them for
  each request, so a withdrawn consent takes effect at once). Other users' `user/` scopes
  reach no patient data: an administrator reads it only by breaking the glass, with a reason.
- Investigators (a user with PractitionerRole/CareTeam/Group memberships, or a backend
  client registered to act for such recipients) reach the referrals addressed to them, their
  threads and frozen records, and never a live record, whatever their scopes say.
- Bundles outside system scopes are only frozen referral records, read-only. Other types in
  no patient compartment are reached by confined callers only when they hold no patient data
  (DIRECTORY_TYPES), and written by administrators only.
- Frozen records, referrals, answers and their ResearchSubjects are written by the server
  alone (trials/), whatever the scopes; so are the Tasks of the breaches and disclosures
  registers, read by administrators (and a disclosure the law lets its patient see).
- A request without a token (the public principal) reaches the trial catalogue only
  (access/public.py); everything else is UNAUTHORIZED, as if the route had asked for a token.
- Granular scopes (`patient/Observation.rs?category=laboratory`) add their search parameters to
  the query, or are checked against the resource.

Failures are FORBIDDEN (403) with an OperationOutcome naming what was missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from ..model.errors import Kind, fail
from ..model.platform_codes import (MESSAGE_SYSTEM, PATIENT_VISIBLE, REFERRAL_IDENTIFIER,
                                    REGISTER_SYSTEM, RIGHT_SYSTEM, SERVER_MADE, SNAPSHOT)
from ..search import Not
from ..search import Clause, IndexEntry, Query, ReferencePredicate, Registry, TokenPredicate, extract, matches
from ..search import parse_query
from .principal import PRACTITIONER_ACCOUNTS, Principal, Role
from .public import public_clauses
from .scopes import Interaction, Restriction, scopes_union

_WRITES = frozenset({"create", "update", "patch", "delete"})
_READS = frozenset({"read", "vread", "search", "history"})
# Types that say who someone is to the platform (a PractitionerRole makes an investigator, a
# RelatedPerson a representative): written by system clients alone.
_IDENTITIES = frozenset({"PractitionerRole", "RelatedPerson"})
_SERVER_MADE = {
    "Bundle": Clause((Not("_tag", (TokenPredicate("_tag", MESSAGE_SYSTEM, SNAPSHOT),)),)),
    "Communication": Clause((Not("category", tuple(
        TokenPredicate("category", MESSAGE_SYSTEM, code) for code in sorted(SERVER_MADE))),)),
    "ResearchSubject": Clause((Not("identifier", (
        TokenPredicate("identifier", REFERRAL_IDENTIFIER, None),)),)),
}
# Types in no patient compartment that hold no patient data: directories of people, places
# and organisations, trials, and knowledge (terminology, definitions, medications).
DIRECTORY_TYPES = frozenset({
    "ActivityDefinition", "CapabilityStatement", "CatalogEntry", "ChargeItemDefinition",
    "CodeSystem", "CompartmentDefinition", "ConceptMap", "DeviceDefinition",
    "EffectEvidenceSynthesis", "Endpoint", "EventDefinition", "Evidence", "EvidenceVariable",
    "ExampleScenario", "GraphDefinition", "HealthcareService", "ImplementationGuide",
    "InsurancePlan", "Library", "Location", "Measure", "Medication", "MedicationKnowledge",
    "MedicinalProduct", "MedicinalProductAuthorization", "MedicinalProductContraindication",
    "MedicinalProductIndication", "MedicinalProductIngredient", "MedicinalProductInteraction",
    "MedicinalProductManufactured", "MedicinalProductPackaged", "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect", "MessageDefinition", "NamingSystem",
    "ObservationDefinition", "OperationDefinition", "Organization", "OrganizationAffiliation",
    "PlanDefinition", "Practitioner", "PractitionerRole", "Questionnaire", "ResearchDefinition",
    "ResearchElementDefinition", "ResearchStudy", "RiskEvidenceSynthesis", "SearchParameter",
    "Slot", "SpecimenDefinition", "StructureDefinition", "StructureMap", "Substance",
    "SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein",
    "SubstanceReferenceInformation", "SubstanceSourceMaterial", "SubstanceSpecification",
    "TerminologyCapabilities", "TestScript", "ValueSet",
})


def compartment_clause(registry: Registry, resource_type: str, patient_id: str, *,
                       links: bool = True) -> Clause | None:
    """Membership of `resource_type` in Patient/`patient_id`'s compartment; None when the type
    is in no patient compartment. `links=False` leaves out the Patients whose `link` names
    the patient: access never follows Patient.link (docs/auth.md, "Patient.link")."""
    codes = registry.patient_compartment(resource_type)
    if not links and resource_type == "Patient":
        codes = tuple(code for code in codes if code != "link")
    predicates: list[Any] = [ReferencePredicate(code, "Patient", patient_id) for code in codes]
    if resource_type == "Patient":
        predicates.append(TokenPredicate("_id", None, patient_id))
    return Clause(tuple(predicates)) if predicates else None


def _denied(principal: Principal | None, interaction: str, resource_type: str | None) -> Exception:
    what = resource_type or "all types"
    if principal is None:
        return fail(Kind.FORBIDDEN, "forbidden", "No authenticated caller.")
    return fail(Kind.FORBIDDEN, "forbidden",
                f"The access token's scopes do not permit {interaction} on {what}.",
                details_code="MSG_AUTH_REQUIRED")


class Decision:
    """How a principal may perform one interaction on one type (or all types): the clauses to
    add to a query, for searches and for checking single resources alike. `clauses` confine
    the caller to part of the type (a compartment, a granular scope); `hidden` holds out the
    registers' Tasks, and holds on every type, so a search or history across all types keeps
    it without being confined. Neither: unrestricted."""

    def __init__(self, clauses: tuple[Clause, ...], hidden: tuple[Clause, ...] = ()) -> None:
        self.clauses = clauses
        self.hidden = hidden

    @property
    def unrestricted(self) -> bool:
        return not (self.clauses or self.hidden)

    def confine(self, query: Query) -> Query:
        """`query` restricted to what the principal may see."""
        every = (*self.clauses, *self.hidden)
        return query.restrict(*every) if every else query

    def admits(self, resource_type: str, resource: dict[str, Any],
               entries: Sequence[IndexEntry] | None = None) -> bool:
        """Whether `resource` (whose index `entries` may be given) lies inside what the
        principal may reach."""
        if self.unrestricted:
            return True
        if entries is None:
            entries = extract(resource)
        query = Query(resource_type, (*self.clauses, *self.hidden))
        return matches(query, entries, resource_type=resource_type)


def decide(principal: Principal | None, registry: Registry, interaction: Interaction,
           resource_type: str | None, *, instance: bool = False, included: bool = False) -> Decision:
    """The Decision for `interaction` on `resource_type` (None: all types), or FORBIDDEN
    (UNAUTHORIZED for a caller without a token). `included`: for the `_include` and
    `_revinclude` results of a search."""
    if principal is not None and principal.role is Role.PUBLIC:
        return Decision(public_clauses(interaction, resource_type, included=included))
    if (resource_type == "Consent" and interaction in ("update", "patch", "delete") and principal
            and principal.confined and not principal.speaks_for_patient):
        raise fail(Kind.FORBIDDEN, "forbidden", "A patient's Consents are changed or withdrawn "
                   "by the patient or their representative only.")
    if resource_type in _IDENTITIES and interaction in _WRITES and principal and principal.confined:
        raise fail(Kind.FORBIDDEN, "forbidden", f"{resource_type} is written by system clients.")
    decision = _decide(principal, registry, interaction, resource_type, instance=instance)
    if resource_type in (None, "Task") and principal and not (principal.server or principal.admin):
        # Across all types too: a system client's search or history of every type.
        decision = Decision(decision.clauses, (_registers(principal, interaction),))
    guarded = _SERVER_MADE.get(resource_type or "")
    if guarded is not None and interaction in _WRITES and not (principal and principal.server):
        # Frozen records, referrals, answers and the ResearchSubjects they keep are the
        # server's: nobody else writes, changes or removes them.
        return Decision((*decision.clauses, guarded), decision.hidden)
    return decision


def _registers(principal: Principal, interaction: str) -> Clause:
    """The Tasks of the operator's breaches and disclosures registers (privacy/) are the
    administrators' to read and the server's to write, as are the rights requests; the patient (or representative) also
    reads a disclosure about them that the law lets them see (tagged PATIENT_VISIBLE)."""
    if interaction in _WRITES:
        # Rights requests too: the operator records them (`fhir-server rights`).
        return Clause((Not("code", (TokenPredicate("code", REGISTER_SYSTEM, None),
                                    TokenPredicate("code", RIGHT_SYSTEM, None))),))
    kept = Not("code", (TokenPredicate("code", REGISTER_SYSTEM, None),))
    if principal.speaks_for_patient and interaction in _READS:
        return Clause((kept, TokenPredicate("_tag", REGISTER_SYSTEM, PATIENT_VISIBLE)))
    return Clause((kept,))


def _decide(principal: Principal | None, registry: Registry, interaction: Interaction,
            resource_type: str | None, *, instance: bool) -> Decision:
    if principal is None or principal.role is Role.UNKNOWN:
        raise _denied(principal, interaction, resource_type)
    if resource_type == "AuditEvent" and interaction in _WRITES:
        raise fail(Kind.FORBIDDEN, "forbidden",
                   "The audit trail is append-only and written by the server alone.")
    grant = principal.grant
    type_name = resource_type or "*"
    if principal.break_glass is not None:
        return _break_glass(principal, interaction, type_name, instance)
    if principal.role in (Role.SYSTEM, Role.SERVER):
        # What their system/ scopes name (else, with a patient in context, what patient/
        # scopes reach of that patient).
        system = grant.restrictions(interaction, type_name, ("system",), instance=instance)
        if system is None:
            return Decision(())
        if system:
            return Decision(_restriction_clauses(registry, resource_type, system, principal,
                                                 interaction))
    if resource_type is None:
        raise _denied(principal, interaction, resource_type)
    if principal.patient is not None:
        levels: tuple[str, ...] = ("patient",)
        reach = _patient_reach(registry, resource_type, principal, interaction)
    elif principal.role in PRACTITIONER_ACCOUNTS:
        # An investigator site system holds system/ scopes, an investigator user user/ ones:
        # either way what it reaches is its referrals, never the live record.
        levels = ("system", "user") if principal.role is Role.INVESTIGATOR else ("user",)
        reach = _user_reach(registry, resource_type, principal, interaction)
    else:
        raise _denied(principal, interaction, resource_type)
    granted = grant.restrictions(interaction, resource_type, levels, instance=instance)
    if granted is not None and not granted:
        raise _denied(principal, interaction, resource_type)
    clauses = reach
    if granted:
        clauses += _restriction_clauses(registry, resource_type, granted, principal, interaction)
    return Decision(clauses)


def _break_glass(principal: Principal, interaction: Interaction, type_name: str,
                 instance: bool) -> Decision:
    """An administrator's emergency read, with its stated reason (audited): reads only, of
    what the token's `user/` scopes name, unconfined."""
    if interaction not in _READS:
        raise fail(Kind.FORBIDDEN, "forbidden", "Break-glass access is for reading only.")
    granted = principal.grant.restrictions(interaction, type_name, ("user",), instance=instance)
    if granted is not None:
        raise _denied(principal, interaction, None if type_name == "*" else type_name)
    return Decision(())


def _patient_reach(registry: Registry, resource_type: str, principal: Principal,
                   interaction: str) -> tuple[Clause, ...]:
    """A patient's (or representative's) reach: their own compartment; no Bundle (frozen
    referral records belong to their recipients). A relative's is the part of it their
    delegation names (access/delegation.py), and the directories (no patient data) to read."""
    assert principal.patient is not None
    directory = resource_type in DIRECTORY_TYPES and interaction in _READS
    if principal.role is Role.RELATIVE and not directory and not (
            principal.delegation and principal.delegation.permits(interaction, resource_type)):
        raise fail(Kind.FORBIDDEN, "forbidden", f"The patient's delegation does not let this "
                   f"relative {interaction} {resource_type}.")
    if resource_type == "Bundle":
        return _bundles((), interaction)
    if resource_type == "Consent" and interaction == "delete":
        raise fail(Kind.FORBIDDEN, "forbidden", "A Consent is withdrawn by setting its status to "
                   "inactive: the record of what was agreed stays.")
    compartment = compartment_clause(registry, resource_type, principal.patient, links=False)
    if compartment is None:
        return _outside_compartments(resource_type, principal, interaction)
    return (compartment,)


# A physician's reach names each consented patient: built afresh for every decision, it cost
# a request that reads 200 patients' records (ResearchStudy/{id}/$match) half its CPU. The
# reach is a function of its arguments alone; the principal is hashed by value.
@lru_cache(maxsize=64)  # a few physicians at once: each entry names all their patients
def _user_reach(registry: Registry, resource_type: str, principal: Principal,
                interaction: str) -> tuple[Clause, ...]:
    """A practitioner's reach: the compartments of the patients whose consent names them; as
    an investigator, also the referral Communications sent to or by one of their recipient
    identities (reading only: answers are written by the trials service); Bundles only as the
    frozen records of their referrals. A patient's Consents are recorded by practitioners but
    changed or withdrawn only by the patient (or a system client)."""
    if resource_type == "Bundle":
        return _bundles(principal.snapshots, interaction)
    if resource_type == "Task" and principal.admin and interaction in _READS:
        # Administrators keep the registers of rights requests, breaches and disclosures
        # (privacy/): those Tasks alone, read-only (the `fhir-server` commands write them).
        return (Clause((TokenPredicate("code", RIGHT_SYSTEM, None),
                        TokenPredicate("code", REGISTER_SYSTEM, None))),)
    if not registry.patient_compartment(resource_type) and resource_type != "Patient":
        return _outside_compartments(resource_type, principal, interaction)
    predicates: list[Any] = [p for id in principal.consented or ()
                             for p in (compartment_clause(registry, resource_type, id, links=False)
                                             or Clause(())).any_of]
    if resource_type == "Communication" and principal.recipients and interaction not in _WRITES:
        predicates += [ReferencePredicate(code, *reference.split("/", 1))
                       for reference in principal.recipients for code in ("recipient", "sender")]
    return (Clause(tuple(predicates)),)


def _outside_compartments(resource_type: str, principal: Principal,
                          interaction: str) -> tuple[Clause, ...]:
    """Types in no patient compartment, for callers confined to patients: the directory and
    knowledge types are read as the scopes name them and written by administrators only; the
    others (Binary, Linkage, Contract, Device, ...) may carry a patient's data and are left to
    system clients. A user's Subscriptions are theirs: those they own (docs/subscriptions.md)."""
    if resource_type == "Subscription" and principal.fhir_user:
        owner = principal.fhir_user.split("/", 1)  # a reference to match, not a role to tell
        return (Clause((ReferencePredicate("owner", owner[0], owner[-1]),)),)
    if resource_type not in DIRECTORY_TYPES:
        if interaction in _WRITES:
            raise fail(Kind.FORBIDDEN, "forbidden", f"Only system clients write {resource_type}.")
        return (Clause(()),)
    if interaction in _WRITES and not principal.admin:
        raise fail(Kind.FORBIDDEN, "forbidden",
                   f"{resource_type} is written by system clients and administrators.")
    return ()


def _bundles(snapshots: Sequence[str], interaction: str) -> tuple[Clause, ...]:
    """Bundles outside system scopes: the frozen referral records listed, read only."""
    if interaction in _WRITES:
        raise fail(Kind.FORBIDDEN, "forbidden", "Only system clients write Bundle resources.")
    return (Clause(tuple(TokenPredicate("_id", None, id) for id in snapshots)),)


def _restriction_clauses(registry: Registry, resource_type: str | None,
                         restrictions: Sequence[Restriction], principal: Principal,
                         interaction: str) -> tuple[Clause, ...]:
    """The clauses of granular scopes: each scope's parameters AND together, and the scopes
    OR together (SMART 2.2: each grants its own subset, access is their union), written as
    the AND of clauses a Query holds (scopes_union)."""
    if resource_type is None:
        raise _denied(principal, interaction, resource_type)
    alternatives = []
    for restriction in restrictions:
        query, issues = parse_query(resource_type, list(restriction), registry)
        if issues:
            raise _denied(principal, interaction, resource_type)
        alternatives.append(query.clauses)
    clauses = scopes_union(alternatives, lambda chosen: Clause(
        tuple(p for clause in chosen for p in clause.any_of)))
    if clauses is None:
        raise fail(Kind.FORBIDDEN, "forbidden",
                   f"The granular scopes for {resource_type} are too many to combine; ask for fewer.")
    return clauses
