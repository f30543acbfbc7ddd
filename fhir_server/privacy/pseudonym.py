"""Keyed pseudonyms, and the pseudonymised copy of a patient's record (docs/privacy.md,
"Pseudonymised archives").

A pseudonym is HMAC-SHA-256 under the **pseudonym key** of what it replaces (`Type/id`, or an
identifier's `system|value`), 32 hex digits (128 bits). The key is its own random 256-bit key
in its own owner-only file beside the key ring (`FHIR_SERVER_PSEUDONYM_KEY`), never in a store,
a backup or the key ring itself: whoever holds an archive without that key can neither compute
the pseudonym of a person they know nor turn a pseudonym back into anyone; whoever holds it can
find a person's archive (the statistician's re-identification, on a legal basis). Destroying
the key makes every archive anonymous for good.

What a copy keeps and drops (`pseudonymise`):
- every id, and every reference to a resource that can belong to a patient's record (its own
  or another patient's: `personal` types), becomes the pseudonym of what it names, the same
  in every archive, so archives still link to each other and never to a person; references
  to other resources (a Practitioner, an Organization, a ResearchStudy) stay, without
  `display`;
- an identifier becomes the pseudonym of its system and value, under our system
  `identifier-pseudonym` (its `use` kept), but one of the platform's own systems (a
  referral's, which makes a legal hold: retention_holds.py) keeps its system;
- dropped everywhere: the narrative (`text` of the resource), `contained` resources, free text
  (`note`, `comment`, `contentString`; `valueString`, `conclusion`, `description` and `text`
  when strings: a CodeableConcept's text, a dosage's, ...), every `display` but a Coding's (a Reference
  may carry a name with no reference at all), attachments' data, address and title (an
  attachment is told by `contentType`, `url`, or `data` without `origin`), and every extension (they may carry
  INS, birthplace, names);
- a person of the record (the Patient, and a RelatedPerson: the relative's name is as
  direct an identifier) keeps gender, the year of birth, the year of death, the country and
  the first two digits of the postal code (the département); names, telecom, address lines
  and city, photo, contacts, links and languages go;
- `meta` becomes the archive's: security label `PSEUDED` (v3 ObservationValue), tag `archived`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from ..model.platform_codes import CANONICAL

KEY_BYTES = 32
PSEUDED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
           "code": "PSEUDED", "display": "pseudonymized"}
LIFECYCLE_SYSTEM = f"{CANONICAL}/CodeSystem/record-lifecycle"
ARCHIVED = {"system": LIFECYCLE_SYSTEM, "code": "archived", "display": "Archived"}
# The system of every identifier of an archive: the original system is part of what the
# pseudonym hides (and its own rules, an INS-NIR's length, would refuse a pseudonym).
IDENTIFIER_SYSTEM = f"{CANONICAL}/identifier-pseudonym"
# Free text and what may carry a name: notes, comments, message texts, extensions (and, at the
# top of a resource, its narrative `text`).
_DROPPED = frozenset({"contained", "note", "comment", "contentString", "extension",
                      "modifierExtension"})
# Free text, when a string (a Goal's `description` is a CodeableConcept, and required).
_FREE_TEXT = frozenset({"valueString", "conclusion", "description", "text"})
# Resources that are a person of the record, scrubbed as `_person` does.
_PERSONS = frozenset({"Patient", "RelatedPerson"})
_ATTACHMENT_KEPT = ("contentType", "language", "size", "creation")
_PATIENT_DROPPED = frozenset({"name", "telecom", "photo", "contact", "link", "communication",
                              "generalPractitioner", "managingOrganization"})


class PseudonymKeyError(Exception):
    """The pseudonym key file cannot be used: unreadable, malformed, or open to others."""


def load_key(path: Path, *, create: bool) -> bytes:
    """The pseudonym key in `path`; made (0600, never overwritten) when missing and `create`."""
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "w") as file:
                file.write(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")
                file.flush()
                os.fsync(file.fileno())
    try:
        if path.stat().st_mode & 0o077:
            raise PseudonymKeyError(f"the pseudonym key {path} is readable or writable by group "
                                    f"or others; run `chmod 600 {path}`")
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except FileNotFoundError:
        raise PseudonymKeyError(f"there is no pseudonym key at {path}") from None
    except (OSError, ValueError):
        raise PseudonymKeyError(f"the pseudonym key {path} cannot be read") from None
    if len(key) != KEY_BYTES:
        raise PseudonymKeyError(f"the pseudonym key {path} is not a {KEY_BYTES}-byte key")
    return key


class Pseudonyms:
    """The pseudonyms under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a pseudonym key has {KEY_BYTES} bytes")
        self._key = key

    def of(self, text: str) -> str:
        """The pseudonym of `text`: 32 hex digits, a valid FHIR id."""
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:32]

    def reference(self, reference: str) -> str:
        """`Type/id` as `Type/<pseudonym of Type/id>`."""
        return f"{reference.split('/', 1)[0]}/{self.of(reference)}"

    def pseudonymise(self, resource: dict[str, Any], personal: Collection[str]) -> dict[str, Any]:
        """The archive's copy of `resource`; references to resources of the `personal` types
        (the Patient and the types of its compartment) become pseudonyms."""
        def reference(ref: str) -> str:
            kind, slash, id = ref.partition("/")
            return self.reference(ref) if slash and id and kind in personal else ref

        copy = _scrub({k: v for k, v in resource.items() if k != "text"}, reference, self.of)
        copy["id"] = self.of(f"{resource['resourceType']}/{resource['id']}")
        if resource["resourceType"] in _PERSONS:
            _person(copy)
        copy["meta"] = {"security": [dict(PSEUDED)], "tag": [dict(ARCHIVED)]}
        return copy


def _scrub(value: Any, reference: Callable[[str], str], pseudonym: Callable[[str], str]) -> Any:
    """`value` without what may name someone; elements left empty go too (FHIR has none)."""
    if isinstance(value, list):
        items = [_scrub(item, reference, pseudonym) for item in value]
        return [item for item in items if item not in ({}, [])]
    if not isinstance(value, dict):
        return value
    if "contentType" in value or "url" in value or ("data" in value and "origin" not in value):
        # an Attachment (SampledData has `data` and `origin`): its data, address and title
        # may name anyone
        return {k: value[k] for k in _ATTACHMENT_KEPT if k in value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        if (key in _DROPPED or key.startswith("_")  # `_x`: a primitive's extensions
                or (key in _FREE_TEXT and isinstance(item, str))):
            continue
        if key == "reference" and isinstance(item, str):
            out[key] = reference(item)
        elif key == "display" and "code" not in value and "system" not in value:
            continue  # a Reference's (or anything's but a Coding's): it may be a name
        elif key == "identifier":
            out[key] = _identifiers(item, pseudonym)
        else:
            out[key] = _scrub(item, reference, pseudonym)
        if out.get(key) in ({}, []):
            del out[key]
    return out


def _identifiers(value: Any, pseudonym: Callable[[str], str]) -> Any:
    """Identifiers as pseudonyms of their system and value (`use` kept, the rest dropped)."""
    def one(identifier: dict[str, Any]) -> dict[str, Any]:
        kept = {k: identifier[k] for k in ("use",) if k in identifier}
        if "value" in identifier:
            own = identifier.get("system", "").startswith(f"{CANONICAL}/")
            kept["system"] = identifier["system"] if own else IDENTIFIER_SYSTEM
            kept["value"] = pseudonym(f"{identifier.get('system', '')}|{identifier['value']}")
        return kept
    if isinstance(value, list):
        return [one(i) for i in value if isinstance(i, dict)]
    return one(value) if isinstance(value, dict) else value


def _person(patient: dict[str, Any]) -> None:
    """Keep of a Patient or RelatedPerson what statistics need and no one can be named by."""
    for key in _PATIENT_DROPPED:
        patient.pop(key, None)
    if "birthDate" in patient:
        patient["birthDate"] = patient["birthDate"][:4]
    if "deceasedDateTime" in patient:
        patient["deceasedDateTime"] = patient["deceasedDateTime"][:4]
    addresses = []
    for address in patient.pop("address", []):
        kept = {k: address[k] for k in ("use", "country") if k in address}
        if address.get("postalCode"):
            kept["postalCode"] = address["postalCode"][:2]
        if kept:
            addresses.append(kept)
    if addresses:
        patient["address"] = addresses
