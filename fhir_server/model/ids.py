"""Logical ids (FHIR R4 datatypes.html#id) and server-assigned ids."""

from __future__ import annotations

import uuid


def new_id() -> str:
    """A fresh server-assigned id (random UUID: no information leaks from ids)."""
    return str(uuid.uuid4())
