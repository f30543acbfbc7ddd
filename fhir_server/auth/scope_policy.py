"""What a client may be granted: the requested scopes it is registered for, no more, and for
an app acting for a user, only what fits that user."""

from __future__ import annotations

from ..access import Grant, parse_scopes

# Lets a backend client call the introspection endpoint with its bearer token (SMART App
# Launch: the endpoint is access-controlled; authenticating the client works too).
INTROSPECT_SCOPE = "introspect"


def narrow_scope(allowed: str, requested: str) -> str:
    """The part of `requested` that `allowed` (a client's registered scope) covers, as a scope
    string; "" when nothing is left. Backend clients get `system/` scopes only, and
    INTROSPECT_SCOPE when registered for it."""
    registered: Grant = parse_scopes(allowed)
    granted = registered.narrow(parse_scopes(requested))
    system = Grant(tuple(s for s in granted.scopes if s.level == "system")).text()
    introspect = INTROSPECT_SCOPE in allowed.split() and INTROSPECT_SCOPE in requested.split()
    return " ".join(([INTROSPECT_SCOPE] if introspect else []) + ([system] if system else []))


def narrow_for_user(allowed: str, requested: str, fhir_user: str,
                    launch_patient: str | None = None, launch_encounter: str | None = None) -> str:
    """The part of `requested` an app registered for `allowed` may have for `fhir_user`.

    `patient/` scopes need a patient in context: the user, if a patient, or the patient a
    launch names (an EHR's, or the one picked). Other users also get `user/` scopes (what they
    reach is decided by the consent policy). `launch/encounter` needs an encounter in the
    launch context.
    """
    granted = parse_scopes(allowed).narrow(parse_scopes(requested))
    is_patient = fhir_user.startswith("Patient/")
    levels = {"patient"} if is_patient else {"user"}
    # online_access is not granted: there is no user session to bind its refresh token to.
    context = set(granted.context) - {"online_access"}
    if not launch_encounter:
        context.discard("launch/encounter")
    if launch_patient:
        levels.add("patient")
    else:
        context.discard("launch")
    if not is_patient and not launch_patient:
        context.discard("launch/patient")
    scopes = tuple(s for s in granted.scopes if s.level in levels)
    return Grant(scopes, frozenset(context)).text()
