"""Who may run the inverse trial match (`ResearchStudy/{id}/$match`, trials/inverse.py), and
what they see of it: a referring physician their consented patients, each with the result;
an investigator counts only (and the pseudonymised results of patients whose Consent allows
pre-screening for the study), and only for a study they are linked to (`linked`); anyone
else nothing, answered as for a study that does not exist (docs/matching.md, "Inverse match")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from .principal import Principal, Role


class View(StrEnum):
    PATIENTS = "patients"  # the caller's consented patients, named, with evidence
    COUNTS = "counts"  # aggregate figures, and pseudonyms of pre-screening candidates


def inverse_view(principal: Principal | None) -> View | None:
    """What `principal` sees of an inverse match; None: denied (as for a missing study)."""
    if principal is None:
        return None
    if principal.role is Role.PRACTITIONER and principal.consented is not None:
        return View.PATIENTS
    if principal.role is Role.INVESTIGATOR:
        return View.COUNTS
    return None


def _references(value: Any) -> set[str]:
    """The `reference` of one Reference or of each in a list."""
    items = value if isinstance(value, list) else [value]
    return {r["reference"] for r in items if isinstance(r, dict) and isinstance(r.get("reference"), str)}


def linked(principal: Principal, study: dict[str, Any], identities: Mapping[str, dict[str, Any]],
           sites: Iterable[dict[str, Any]]) -> bool:
    """Whether an investigator is one of `study`'s: the study names them (or one of the
    identities they receive referrals as) its `principalInvestigator`, or one of those
    identities (`identities`: reference -> content) works at a site of the study: a
    PractitionerRole whose `location` is a site, or a PractitionerRole (`organization`),
    CareTeam (`managingOrganization`) or Group (`managingEntity`) of an Organization managing
    a site (`sites`: the study's site Locations)."""
    named = {principal.fhir_user, *(principal.recipients or ())} - {None}
    if _references(study.get("principalInvestigator")) & named:
        return True
    places = _references(study.get("site"))
    organizations = set().union(*(_references(s.get("managingOrganization")) for s in sites))
    for reference, body in identities.items():
        kind = reference.partition("/")[0]
        if kind == "PractitionerRole" and (_references(body.get("location")) & places
                                           or _references(body.get("organization")) & organizations):
            return True
        field = {"CareTeam": "managingOrganization", "Group": "managingEntity"}.get(kind)
        if field and _references(body.get(field)) & organizations:
            return True
    return False
