"""Who may run the inverse trial match (`ResearchStudy/{id}/$match`, trials/inverse.py), and
what they see of it: a referring physician their consented patients, each with the result;
an investigator counts only (and the pseudonymised results of patients whose Consent allows
pre-screening for the study); anyone else nothing, answered as for a study that does not
exist (docs/matching.md, "Inverse match")."""

from __future__ import annotations

from enum import StrEnum

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
