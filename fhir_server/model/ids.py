"""Logical ids (FHIR R4 datatypes.html#id) and server-assigned ids."""

from __future__ import annotations

import re
import uuid

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def is_valid_id(value: str) -> bool:
    """True if `value` is a valid FHIR logical id."""
    return _ID.fullmatch(value) is not None


def new_id() -> str:
    """A fresh server-assigned id (random UUID: no information leaks from ids)."""
    return str(uuid.uuid4())
