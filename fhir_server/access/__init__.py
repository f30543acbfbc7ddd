"""Access control: the SMART on FHIR scope model (SMART App Launch 2.x).

Other packages import access only from here.
"""

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
    "LEVELS",
    "ContextScope",
    "Grant",
    "Interaction",
    "Level",
    "ResourceScope",
    "Restriction",
    "parse_scope",
    "parse_scopes",
    "required_permission",
]
