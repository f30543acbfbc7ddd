"""Who is calling: the principal an access token (or the server itself) acts as."""

from __future__ import annotations

from dataclasses import dataclass

from .scopes import Grant, parse_scopes


@dataclass(frozen=True, slots=True)
class Principal:
    """The subject of a request and what it was granted.

    `patient` is the launch patient of a patient-facing token: `patient/` scopes reach only
    that patient's compartment. `consented` lists the patients a practitioner's `user/` scopes
    reach. `recipients` makes the caller an investigator: the PractitionerRole, CareTeam or
    Group references it receives referrals as; it then reaches those referrals, their threads
    and `snapshots` (the frozen records it may read), never a live record. `admin` marks a
    platform administrator, who reaches no health data unless `break_glass` states why.
    `client_id` names the application.
    """

    subject: str
    client_id: str
    grant: Grant
    patient: str | None = None
    fhir_user: str | None = None
    token_id: str | None = None
    # For a practitioner with user/ scopes: the patients whose consent in force names them.
    consented: tuple[str, ...] | None = None
    recipients: tuple[str, ...] | None = None
    snapshots: tuple[str, ...] = ()
    admin: bool = False
    break_glass: str | None = None  # the reason an administrator stated for this request
    server: bool = False  # the server itself: writes what only the server may write

    @property
    def confined(self) -> bool:
        """Whether the caller reaches some patients only (patient, representative,
        practitioner, investigator, administrator), as opposed to a system client or the server."""
        return not self.server and (self.patient is not None or self.consented is not None
                                    or self.recipients is not None)


def server_principal(name: str) -> Principal:
    """The server acting for itself (demo data, the loader, `auth=off`): every system scope."""
    return Principal(subject=name, client_id=name, grant=parse_scopes("system/*.cruds"), server=True)
