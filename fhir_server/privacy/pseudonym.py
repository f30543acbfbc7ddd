"""Keyed pseudonyms, and the pseudonymised copy of a patient's record (docs/privacy.md,
"Pseudonymised archives").

A pseudonym is HMAC-SHA-256 under the **pseudonym key** of what it replaces (`Type/id`, or an
identifier's `system|value`), 32 hex digits (128 bits). The key is its own random 256-bit key
in its own owner-only file beside the key ring (`FHIR_SERVER_PSEUDONYM_KEY`), never in a store,
a backup or the key ring itself: whoever holds an archive without that key can neither compute
the pseudonym of a person they know nor turn a pseudonym back into anyone; whoever holds it can
find a person's archive (the statistician's re-identification, on a legal basis). Destroying
the key makes every archive anonymous for good.

What a copy keeps and drops (`pseudonymise`), element by element along the R4 types of the
schema (model/validation.py), so that an Attachment, a Reference or an Identifier is known
wherever it is:
- every id, and every reference to a resource that can belong to a patient's record (its own
  or another patient's: `personal` types), becomes the pseudonym of what it names, the same
  in every archive, so archives still link to each other and never to a person; references
  to other resources (a Practitioner, an Organization, a ResearchStudy) stay, without
  `display`;
- an Identifier, wherever it is, becomes the pseudonym of its system and value, under our
  system `identifier-pseudonym` (its `use` kept), but one of the platform's own systems (a
  referral's, which makes a legal hold: retention_holds.py) keeps its system;
- dropped everywhere: the narrative, `contained` resources, free text (`note`, `comment`,
  `contentString`; `valueString`, `conclusion`, `description`, `text` and `name` when
  strings: a CodeableConcept's text, a dosage's, an Account's name, ...), every `display`
  but a Coding's (a Reference may carry a name with no reference at all), every HumanName,
  ContactPoint and Signature, attachments' data, address and title, and every extension
  (they may carry INS, birthplace, names);
- an Address keeps its use, its country and the first two digits of its postal code (the
  département); a person of the record (the Patient, a RelatedPerson, a Person) keeps
  gender, the year of birth and the year of death; its photo, contacts, links and languages
  go;
- a required element left with nothing holds the data-absent-reason extension `masked`
  instead (extension-data-absent-reason.html): the copy of a valid resource is valid R4
  (tests/privacy/test_pseudonym.py proves it over the shared Synthea records and R4's
  examples), so the archive is written without validating it again;
- `meta` becomes the archive's: security label `PSEUDED` (v3 ObservationValue), tag `archived`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..model import schema_rules
from ..model.platform_codes import CANONICAL
from ..model.validation import schema_definitions

KEY_BYTES = 32
PSEUDED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
           "code": "PSEUDED", "display": "pseudonymized"}
LIFECYCLE_SYSTEM = f"{CANONICAL}/CodeSystem/record-lifecycle"
ARCHIVED = {"system": LIFECYCLE_SYSTEM, "code": "archived", "display": "Archived"}
# The system of every identifier of an archive: the original system is part of what the
# pseudonym hides (and its own rules, an INS-NIR's length, would refuse a pseudonym).
IDENTIFIER_SYSTEM = f"{CANONICAL}/identifier-pseudonym"
DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
# Free text and what may carry a name: notes, comments, message texts, extensions.
_DROPPED = frozenset({"contained", "note", "comment", "contentString", "extension",
                      "modifierExtension"})
# Free text, when a string (a Goal's `description` is a CodeableConcept, and required; an
# Account's `name` may be "Inpatient: <the patient's name>").
_FREE_TEXT = frozenset({"valueString", "conclusion", "description", "text", "name"})
# Types that name or reach someone wherever they are (a narrative may name anyone).
_NAMING = frozenset({"HumanName", "ContactPoint", "Signature", "Narrative", "Extension"})
# Resources that are a person of the record, scrubbed as `_person` does.
_PERSONS = frozenset({"Patient", "RelatedPerson", "Person"})
_ATTACHMENT_KEPT = ("contentType", "language", "size", "creation")
_PATIENT_DROPPED = frozenset({"photo", "contact", "link", "communication",
                              "generalPractitioner", "managingOrganization"})
_NESTED = "ResourceList"  # a resource inside a resource (a Bundle's entry)


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
        self._mac = hmac.new(key, digestmod=hashlib.sha256)  # copied: keyed once, not per use

    def of(self, text: str) -> str:
        """The pseudonym of `text`: 32 hex digits, a valid FHIR id."""
        mac = self._mac.copy()
        mac.update(text.encode())
        return mac.hexdigest()[:32]

    def pseudonymise(self, resource: dict[str, Any], personal: Collection[str]) -> dict[str, Any]:
        """The archive's copy of `resource`; references to resources of the `personal` types
        (the Patient and the types of its compartment) become pseudonyms."""
        return self.copies([resource], personal)[0]

    def copies(self, resources: list[dict[str, Any]],
               personal: Collection[str]) -> list[dict[str, Any]]:
        """The archive's copies of `resources` (a record: the same pseudonyms recur, each
        computed once), as `pseudonymise` makes them."""
        return self.copier(personal).copies(resources)

    def copier(self, personal: Collection[str]) -> Copier:
        """What makes the copies of one record, slice by slice (`Copier.copies`), each of
        its pseudonyms computed once."""
        return Copier(self.of, personal)


class Copier:
    """The copies of one record: the walk of `_scrub`, with the record's pseudonyms."""

    def __init__(self, of: Callable[[str], str], personal: Collection[str]) -> None:
        self._of, self._personal = of, personal
        self._known: dict[str, str] = {}

    def copies(self, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for resource in resources:
            resource_type = resource["resourceType"]
            copy = self._scrub(resource, resource_type)
            copy["id"] = self._pseudonym(f"{resource_type}/{resource['id']}")
            if resource_type in _PERSONS:
                _person(copy)
            copy["meta"] = {"security": [dict(PSEUDED)], "tag": [dict(ARCHIVED)]}
            out.append(copy)
        return out

    def _pseudonym(self, text: str) -> str:
        known = self._known.get(text)
        if known is None:
            known = self._known[text] = self._of(text)
        return known

    def _reference(self, reference: str) -> str:
        kind, slash, id = reference.partition("/")
        if slash and id and kind in self._personal:
            return f"{kind}/{self._pseudonym(reference)}"
        return reference

    def _scrub(self, value: dict[str, Any], definition: str) -> dict[str, Any]:
        """`value`, of type `definition`, without what may name someone; elements left empty
        go too (FHIR has none), or are `masked` when required."""
        if definition == "Attachment":  # its data, address and title may name anyone
            return {k: value[k] for k in _ATTACHMENT_KEPT if k in value}
        if definition == "Address":
            return _address(value)
        shape = _shape(definition)
        out: dict[str, Any] = {}
        # A loop run for every element of every resource of a record: no closure or
        # generator made per element (a third of the walk's time when it made them).
        for key, item in value.items():
            child = shape.children.get(key, _UNKNOWN)
            if key in _DROPPED or child is _UNKNOWN or child in _NAMING:
                continue  # `_x` (a primitive's extensions) too: not in `children`
            if child is None:  # a primitive
                if key == "reference" and definition == "Reference":
                    out[key] = self._reference(item)
                elif not ((key in _FREE_TEXT and isinstance(item, str))
                          or (key == "display" and definition != "Coding")):
                    out[key] = item
            elif isinstance(item, list):
                kept = [copy for copy in [self._child(i, child) for i in item] if copy]
                if kept:
                    out[key] = kept
            elif kept_one := self._child(item, child):
                out[key] = kept_one
        for names, present in shape.required:
            for name in present:
                if name in out:
                    break
            else:
                _mask(out, value, names, shape)
        return out

    def _child(self, value: dict[str, Any], definition: str) -> dict[str, Any]:
        if definition == "Identifier":
            return self._identifier(value)
        if definition == _NESTED:
            definition = value["resourceType"]
        return self._scrub(value, definition)

    def _identifier(self, identifier: dict[str, Any]) -> dict[str, Any]:
        """An Identifier as the pseudonym of its system and value (`use` kept)."""
        kept = {k: identifier[k] for k in ("use",) if k in identifier}
        if "value" in identifier:
            system = identifier.get("system", "")
            kept["system"] = system if system.startswith(f"{CANONICAL}/") else IDENTIFIER_SYSTEM
            kept["value"] = self._pseudonym(f"{system}|{identifier['value']}")
        return kept


_UNKNOWN = "?"  # a name the type does not have


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the walk needs of a type: the definition of each element (None: a primitive),
    and the JSON names of each required element (a choice has several)."""

    children: dict[str, str | None]
    # each required element: its JSON names, and the names that hold it in a copy (`_x` too)
    required: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]


@cache
def _shape(definition: str) -> _Shape:
    defs = schema_definitions()
    properties = defs[definition]["properties"]
    children: dict[str, str | None] = {}
    for name, node in properties.items():
        if name.startswith("_"):
            continue
        target = node.get("items", node).get("$ref", "").rsplit("/", 1)[-1]
        complex_type = target == _NESTED or "properties" in defs.get(target, {})
        children[name] = target if complex_type else None
    bases = schema_rules.choice_bases()
    required = []
    for element in schema_rules.rules()["required"].get(definition, []):
        if element.endswith("[x]"):
            base = element[:-3]
            required.append(tuple(n for n in children if bases.get(n) == base))
        else:
            required.append((element,))
    return _Shape(children, tuple((names, (*names, *(f"_{n}" for n in names))) for names in required))


def _mask(out: dict[str, Any], value: dict[str, Any], names: tuple[str, ...],
          shape: _Shape) -> None:
    """Put the `masked` data-absent-reason in place of the required element `names` the walk
    emptied. A primitive is masked as `_x`, but a choice's in one of its complex types (the
    R4B models refuse a required choice held by `_valueString` alone)."""
    dropped = next((n for n in names if n in value), None)
    if dropped is None:
        return
    masked = {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "masked"}]}
    if shape.children[dropped] is None:
        complex_types = [n for n in names if shape.children[n] is not None]
        if not complex_types:
            out[f"_{dropped}"] = masked
            return
        dropped = min(complex_types, key=lambda n: not n.endswith("CodeableConcept"))
    out[dropped] = [masked] if isinstance(value.get(dropped), list) else masked


def _address(address: dict[str, Any]) -> dict[str, Any]:
    """What an Address says that names no one: its use, country, and département."""
    kept = {k: address[k] for k in ("use", "country") if k in address}
    if address.get("postalCode"):
        kept["postalCode"] = address["postalCode"][:2]
    return kept


def _person(person: dict[str, Any]) -> None:
    """Keep of a Patient, RelatedPerson or Person what statistics need and no one can be
    named by (names, telecom and address lines are gone already: `_scrub`)."""
    for key in _PATIENT_DROPPED:
        person.pop(key, None)
    if "birthDate" in person:
        person["birthDate"] = person["birthDate"][:4]
    if "deceasedDateTime" in person:
        person["deceasedDateTime"] = person["deceasedDateTime"][:4]
