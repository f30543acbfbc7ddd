"""Who is calling: the principal an access token (or the server itself) acts as."""

from __future__ import annotations

from dataclasses import dataclass

from .scopes import Grant, parse_scopes


@dataclass(frozen=True, slots=True)
class Principal:
    """The subject of a request and what it was granted.

    `patient` is the launch patient of a patient-facing token: `patient/` scopes reach only
    that patient's compartment. `consented` lists the patients a practitioner's `user/` scopes
    reach. `client_id` names the application.
    """

    subject: str
    client_id: str
    grant: Grant
    patient: str | None = None
    fhir_user: str | None = None
    token_id: str | None = None
    # For a practitioner with user/ scopes: the patients whose consent in force names them.
    consented: tuple[str, ...] | None = None


def server_principal(name: str) -> Principal:
    """The server acting for itself (demo data, the loader, `auth=off`): every system scope."""
    return Principal(subject=name, client_id=name, grant=parse_scopes("system/*.cruds"))
