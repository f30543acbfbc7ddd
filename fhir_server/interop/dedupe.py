"""Idempotent loading of identified resources: conditional create by identifier.

A POST entry for a Patient, Organization or Practitioner that carries an identifier, and no
`request.ifNoneExist` of its own, gets one (http.html#ccreate): loading the same data twice
then finds the resource stored the first time instead of creating a duplicate, and the
transaction points every reference to it at the stored one. For a Patient the French INS-NIR
(`urn:oid:1.2.250.1.213.1.4.8`) is preferred; otherwise the first identifier with a system and
a value (a hospital's patient number, an organisation's FINESS, a practitioner's RPPS).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
IDENTIFIED_TYPES = frozenset({"Patient", "Organization", "Practitioner"})
# Token search escapes (search.html#escaping): these four are special in a value.
_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "|": "\\|", "$": "\\$"})


def identifier_criteria(resource: dict[str, Any]) -> str | None:
    """`identifier=system|value` for the resource's most telling identifier, or None."""
    candidates = [
        i for i in resource.get("identifier") or ()
        if isinstance(i, dict) and isinstance(i.get("system"), str) and isinstance(i.get("value"), str)
        and i.get("use") != "old"  # a retired number may now belong to someone else
    ]
    if not candidates:
        return None
    chosen = next((i for i in candidates if i["system"] == INS_NIR), candidates[0])
    token = f"{chosen['system'].translate(_ESCAPES)}|{chosen['value'].translate(_ESCAPES)}"
    return urlencode({"identifier": token})


def add_if_none_exist(entry: dict[str, Any]) -> None:
    """Give a POST entry of an identified type an `ifNoneExist` on its identifier, in place."""
    request, resource = entry.get("request"), entry.get("resource")
    if not isinstance(request, dict) or not isinstance(resource, dict):
        return
    if str(request.get("method", "")).upper() != "POST" or request.get("ifNoneExist"):
        return
    if resource.get("resourceType") not in IDENTIFIED_TYPES:
        return
    criteria = identifier_criteria(resource)
    if criteria is not None:
        request["ifNoneExist"] = criteria
