"""What a patient lets a relative do: the delegation a patient grants to someone close to them
("proche") who is not their legal representative, read from the patient's Consents (FHIR R4
consent.html; docs/privacy.md, "Relatives"). Pure functions on plain data.

A delegation is an active `patient-privacy` Consent of the patient whose top-level provision is
a permit in force naming the relative's RelatedPerson as actor, with the resource types it
covers in `provision.class` (system resource-types) and what the relative may do in
`provision.action` (consentaction: `access` reads, `correct` also creates and updates). Deny
by default: a type not listed, an action not listed, a Consent withdrawn (status inactive),
ended (period) or overruled by a deny in force naming the relative grants nothing. A relative
never deletes, and never writes Consents or RelatedPersons (they would extend their own reach).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import consent as consents

TYPE_SYSTEM = "http://hl7.org/fhir/resource-types"
ACTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentaction"
READ, WRITE = "access", "correct"
_READS = frozenset({"read", "vread", "search", "history"})
_WRITES = frozenset({"create", "update", "patch"})
# Never a relative's to write, whatever a Consent says.
NEVER_WRITTEN = frozenset({"Consent", "RelatedPerson"})


@dataclass(frozen=True, slots=True)
class Grant:
    """What one delegation Consent grants: resource types and consentaction codes."""

    types: frozenset[str]
    actions: frozenset[str]

    def permits(self, interaction: str, resource_type: str) -> bool:
        if interaction in _READS:
            return (resource_type == "Patient" or resource_type in self.types) and bool(
                self.actions & {READ, WRITE})
        if interaction in _WRITES:
            return (WRITE in self.actions and resource_type in self.types
                    and resource_type not in NEVER_WRITTEN)
        return False


@dataclass(frozen=True, slots=True)
class Delegation:
    """What the patient's delegations in force grant one relative (each Consent on its own:
    reading one type and writing another never adds up to writing the first), and the
    Consents that grant it."""

    grants: tuple[Grant, ...]
    consents: tuple[str, ...]

    @property
    def types(self) -> frozenset[str]:
        return frozenset(t for grant in self.grants for t in grant.types)

    def permits(self, interaction: str, resource_type: str) -> bool:
        """Whether the relative may do `interaction` on `resource_type`. The Patient itself is
        readable under any grant: a relative knows whom they act for."""
        return any(grant.permits(interaction, resource_type) for grant in self.grants)


def _codes(codeables: Iterable[dict[str, Any]], system: str) -> set[str]:
    return {c["code"] for codeable in codeables for c in (
        [codeable] if "code" in codeable else codeable.get("coding", []))
            if c.get("system") == system and isinstance(c.get("code"), str)}


def delegation(consents_of_patient: Iterable[dict[str, Any]], relative: str,
               today: str) -> Delegation | None:
    """What the patient's Consents (all of theirs) delegate to `relative` (`RelatedPerson/<id>`)
    today; None when nothing does, or a deny in force names them (or everyone)."""
    every = [c for c in consents_of_patient if c.get("status") == "active"
             and consents.has_scope(c, consents.PRIVACY)]
    if (consents.denied(every, consents.PRIVACY, relative, today)
            or consents.denied(every, consents.PRIVACY, None, today)):
        return None
    granting = [c for c in every if (p := c.get("provision") or {}).get("type") == "permit"
                and consents.in_period(p, today) and relative in consents.actors(p)]
    if not granting:
        return None
    provisions = [c.get("provision") or {} for c in granting]
    return Delegation(tuple(Grant(frozenset(_codes(p.get("class", []), TYPE_SYSTEM)),
                                  frozenset(_codes(p.get("action", []), ACTION_SYSTEM)))
                            for p in provisions),
                      tuple(sorted(str(c.get("id", "")) for c in granting)))
