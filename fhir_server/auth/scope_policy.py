"""What a client may be granted: the requested scopes it is registered for, no more, and for
an app acting for a user, only what fits that user."""

from __future__ import annotations

from ..access import Grant, parse_scopes


def narrow_scope(allowed: str, requested: str) -> str:
    """The part of `requested` that `allowed` (a client's registered scope) covers, as a scope
    string; "" when nothing is left. Backend clients get `system/` scopes only."""
    registered: Grant = parse_scopes(allowed)
    granted = registered.narrow(parse_scopes(requested))
    system = Grant(tuple(s for s in granted.scopes if s.level == "system"))
    return system.text()


def narrow_for_user(allowed: str, requested: str, fhir_user: str) -> str:
    """The part of `requested` an app registered for `allowed` may have for `fhir_user`.

    A patient gets `patient/` scopes and `launch/patient` (the patient is themself); other
    users get `user/` scopes (what they reach is decided by the consent policy). `patient/`
    scopes for a practitioner need a patient picked at launch, which is not built yet, so they
    are not granted.
    """
    granted = parse_scopes(allowed).narrow(parse_scopes(requested))
    is_patient = fhir_user.startswith("Patient/")
    level = "patient" if is_patient else "user"
    scopes = tuple(s for s in granted.scopes if s.level == level)
    context = granted.context if is_patient else granted.context - {"launch/patient"}
    return Grant(scopes, context - {"launch", "launch/encounter"}).text()
