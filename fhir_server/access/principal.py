"""Who is calling: the principal an access token (or the server itself) acts as, with its role
(docs/referrals.md, "Actors and what they reach"). services/reach.py builds it, once per
request, from the token's claims and the store; every later check asks it, never a string
prefix of `fhirUser`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .delegation import Delegation
from .scopes import Grant, parse_scopes


class Role(StrEnum):
    """What the caller is to the platform."""

    PATIENT = "patient"  # a patient user, or a patient-facing app without a user identity
    REPRESENTATIVE = "representative"  # the legal representative of the patient in context
    RELATIVE = "relative"  # someone close the patient in context delegated some access to
    PRACTITIONER = "practitioner"  # a referring physician
    INVESTIGATOR = "investigator"  # a user or site system receiving referrals
    ADMINISTRATOR = "administrator"  # runs the platform; reaches no health data but by break-glass
    SYSTEM = "system"  # a backend client (an EHR): what its system/ scopes name
    SERVER = "server"  # the server itself: writes what only the server may write
    UNKNOWN = "unknown"  # a user of a kind the platform does not know: reaches nothing
    PUBLIC = "public"  # a request without a token: the trial catalogue only (access/public.py)


# The roles that speak for the patient: they change the patient's Consents, write to their
# physicians, never refer.
PATIENT_SIDE = frozenset({Role.PATIENT, Role.REPRESENTATIVE})
# The roles of practitioner accounts: what they reach comes from consents and memberships.
PRACTITIONER_ACCOUNTS = frozenset({Role.PRACTITIONER, Role.INVESTIGATOR, Role.ADMINISTRATOR})


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified access token, and the account or client behind it, say about the
    caller (http/auth.py gathers them; nothing here is decided yet)."""

    subject: str
    client_id: str
    scope: str
    patient: str | None = None  # the launch patient
    fhir_user: str | None = None  # `Type/id`
    unreadable_user: bool = False  # a fhirUser claim not readable as `Type/id`: reaches nothing
    token_id: str | None = None
    admin: bool = False  # the user account is a platform administrator
    acts_for: tuple[str, ...] = ()  # a backend client's recipient identities (investigator site)
    break_glass: str | None = None  # the reason an administrator stated for this request


@dataclass(frozen=True, slots=True)
class Principal:
    """The subject of a request, its role and what it was granted.

    `patient` is the patient in context: `patient/` scopes reach only that patient's
    compartment. `consented` lists the patients a practitioner's `user/` scopes reach (empty
    for investigators and administrators, None for other roles). `recipients` are the
    PractitionerRole, CareTeam or Group references an investigator receives referrals as; it
    reaches those referrals, their threads and `snapshots` (the frozen records it may read),
    never a live record. An administrator reaches health data only when `break_glass` states
    why. `client_id` names the application. A relative reaches what `delegation` (the
    patient's grant in force) and their scopes both allow.
    """

    role: Role
    subject: str
    client_id: str
    grant: Grant
    patient: str | None = None
    fhir_user: str | None = None
    token_id: str | None = None
    consented: tuple[str, ...] | None = None
    recipients: tuple[str, ...] | None = None
    snapshots: tuple[str, ...] = ()
    break_glass: str | None = None
    delegation: Delegation | None = None

    @property
    def server(self) -> bool:
        return self.role is Role.SERVER

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMINISTRATOR

    @property
    def speaks_for_patient(self) -> bool:
        """The patient, or their representative."""
        return self.role in PATIENT_SIDE

    @property
    def confined(self) -> bool:
        """Whether the caller reaches some patients only, as opposed to a system client
        (without a patient in context) or the server."""
        return self.role not in (Role.SYSTEM, Role.SERVER) or self.patient is not None


def server_principal(name: str) -> Principal:
    """The server acting for itself (demo data, the loader, `auth=off`): every system scope."""
    return Principal(Role.SERVER, subject=name, client_id=name, grant=parse_scopes("system/*.cruds"))
