"""Access control: the SMART on FHIR scope model (SMART App Launch 2.x), who the caller is
(principal.py), what a patient's Consents allow (consent.py) and delegate to relatives
(delegation.py), the decision for each interaction (policy.py), and the one-time codes
confirming proposed Consents (codes.py).

Other packages import access only from here.
"""

from . import consent
from .delegation import Delegation, delegation
from .codes import FAILURE_WINDOW, MAX_FAILURES, CodeCheck, ConfirmationCodes
from .policy import Decision, compartment_clause, decide
from .public import check_public_query, public_principal, token_required
from .principal import PATIENT_SIDE, PRACTITIONER_ACCOUNTS, Claims, Principal, Role, server_principal
from .study_match import View, inverse_view, linked
from .scopes import (
    CONTEXT_SCOPES,
    LEVELS,
    ContextScope,
    Grant,
    Interaction,
    Level,
    ResourceScope,
    Restriction,
    parse_scope,
    parse_scopes,
    required_permission,
)

__all__ = [
    "CONTEXT_SCOPES",
    "FAILURE_WINDOW",
    "LEVELS",
    "MAX_FAILURES",
    "PATIENT_SIDE",
    "PRACTITIONER_ACCOUNTS",
    "Claims",
    "CodeCheck",
    "ConfirmationCodes",
    "ContextScope",
    "Decision",
    "Delegation",
    "Grant",
    "Interaction",
    "Level",
    "Principal",
    "ResourceScope",
    "Restriction",
    "Role",
    "View",
    "check_public_query",
    "compartment_clause",
    "consent",
    "decide",
    "delegation",
    "inverse_view",
    "linked",
    "parse_scope",
    "parse_scopes",
    "public_principal",
    "required_permission",
    "server_principal",
    "token_required",
]
