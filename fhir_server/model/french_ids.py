"""French national identifiers: the INS on Patient, RPPS / IDNPS on Practitioner.

Rules from the INS referential (ANS, "Référentiel Identifiant national de santé") and the
national identity-vigilance referential (RNIV), with the systems and uses FR Core slices them
by (FR Core Patient INS profile, `fr-core-patient-ins`). The FR Core package is not held
offline: the canonical URLs below are written from its published pages (docs/validation.md,
"French identities", says which).

Every rule gives `Issue`s with a FHIRPath `expression`; nothing here raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any, Final

from .errors import Issue

NIR_SYSTEM: Final = "urn:oid:1.2.250.1.213.1.4.8"
NIA_SYSTEM: Final = "urn:oid:1.2.250.1.213.1.4.9"
NIR_TEST_SYSTEM: Final = "urn:oid:1.2.250.1.213.1.4.10"
NIR_DEMO_SYSTEM: Final = "urn:oid:1.2.250.1.213.1.4.11"
RPPS_SYSTEM: Final = "urn:oid:1.2.250.1.71.4.2.1"

# identifier.use per INS system, as FR Core's slices INS-NIR, INS-NIA, INS-NIR-TEST and
# INS-NIR-DEMO bind it: `old` keeps a deactivated NIR (after a change of sex, say).
INS_USES: Final[dict[str, frozenset[str]]] = {
    NIR_SYSTEM: frozenset({"official", "old"}),
    NIA_SYSTEM: frozenset({"temp"}),
    NIR_TEST_SYSTEM: frozenset({"official", "old"}),
    NIR_DEMO_SYSTEM: frozenset({"official", "old"}),
}
_INS_NAMES: Final = {NIR_SYSTEM: "INS-NIR", NIA_SYSTEM: "INS-NIA",
                     NIR_TEST_SYSTEM: "INS-NIR-TEST", NIR_DEMO_SYSTEM: "INS-NIR-DEMO"}

FR_CORE: Final = "https://hl7.fr/ig/fhir/core"
IDENTITY_RELIABILITY_URL: Final = f"{FR_CORE}/StructureDefinition/fr-core-identity-reliability"
INSEE_CODE_URL: Final = f"{FR_CORE}/StructureDefinition/fr-core-address-insee-code"
BIRTHPLACE_URL: Final = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"

# RNIV identity statuses (exactly one applies) and attributes (any number).
STATUSES: Final = ("VIDE", "PROV", "RECUP", "VALI", "QUAL")  # VIDE: not yet qualified
ATTRIBUTES: Final = {"DOUTE": "doubtful", "FICTI": "fictitious", "HOMON": "homonym"}

# A NIR: sex (1 digit), year (2), month (2), department (2, or 2A / 2B for Corsica), commune
# or country (3), order number (3), key (2). Temporary numbers (NIA) start with 7 or 8.
_NIR: Final = re.compile(r"[1-8][0-9]{4}(?:[0-9]{2}|2[AB])[0-9]{8}")
_CORSICA: Final = {"2A": "19", "2B": "18"}  # for the key only (INS referential)
_COG: Final = re.compile(r"[0-9]{5}|2[AB][0-9]{3}")  # INSEE commune or country (99xxx) code
_SEX: Final = {"1": "male", "2": "female", "7": "male", "8": "female"}


def nir_key(first13: str) -> int:
    """The key of a NIR or NIA: 97 − (its first 13 characters mod 97), Corsica's 2A read as
    19 and 2B as 18."""
    department = first13[5:7]
    digits = first13[:5] + _CORSICA.get(department, department) + first13[7:]
    return 97 - int(digits) % 97


def luhn_valid(digits: str) -> bool:
    """Whether `digits` ends with its Luhn check digit."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _issue(severity: str, code: str, message: str, expression: str) -> Issue:
    return Issue(code=code, diagnostics=message, severity=severity, expression=(expression,))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    return ((i, v) for i, v in enumerate(_list(value)) if isinstance(v, dict))


# --- INS --------------------------------------------------------------------------------


def patient_issues(
    patient: dict[str, Any], prefix: str = "Patient", *, ins_profile: bool = False
) -> list[Issue]:
    """What breaks the INS rules in `patient` (a schema-valid Patient); [] when there is no
    INS identifier and no identity status to check.

    `ins_profile` adds what FR Core Patient INS (`fr-core-patient-ins`) requires: an identity
    status (identityReliability 1..1), a birthplace with its COG code (1..1), at least one
    identifier, and (fr-core-1) an INS identifier when the identity is VALI or QUAL.
    """
    found: list[Issue] = []
    ins = [(i, ident) for i, ident in _dicts(patient.get("identifier"))
           if ident.get("system") in INS_USES]
    for i, identifier in ins:
        found.extend(_ins_identifier_issues(patient, identifier, f"{prefix}.identifier[{i}]",
                                            ins_profile=ins_profile))
    status, attributes, status_issues = identity_status(patient, prefix)
    found.extend(status_issues)
    if status is None and ins_profile:
        found.append(_issue("error", "required", "The identity status (FR Core "
                            "identityReliability, identityStatus) is missing",
                            f"{prefix}.extension('{IDENTITY_RELIABILITY_URL}')"))
    elif ins and status != "QUAL":
        # An asserted status below VALI is an error. VALI is a warning: RNIV wants QUAL, but
        # FR Core's fr-core-1 expects the INS on a VALI identity. No status at all is only a
        # warning too, as plain FR Core Patient leaves identityReliability optional.
        severity = "error" if status in ("VIDE", "PROV", "RECUP") else "warning"
        what = f"status {status}" if status else "no status"
        found.append(_issue(
            severity, "business-rule",
            f"The INS matricule may be carried by a qualified identity only (QUAL); this "
            f"identity has {what} ({IDENTITY_RELIABILITY_URL})", f"{prefix}.identifier[{ins[0][0]}]"))
    if ins and status == "QUAL":
        found.extend(trait_issues(patient, prefix))
    elif ins_profile:
        found.extend(_birthplace_issues(patient, prefix))
    if ins_profile and not _list(patient.get("identifier")):
        found.append(_issue("error", "required", "A Patient INS has at least one identifier",
                            f"{prefix}.identifier"))
    elif ins_profile and status in ("VALI", "QUAL") and not ins:
        found.append(_issue("error", "required", f"A {status} identity carries its INS "
                            "(fr-core-1)", f"{prefix}.identifier"))
    blocking = [ATTRIBUTES[a] for a in attributes if a in ("DOUTE", "FICTI")]
    if blocking and status in ("VALI", "QUAL"):
        found.append(_issue(
            "error", "business-rule",
            f"A {' and '.join(blocking)} identity cannot be {status} (RNIV)",
            f"{prefix}.extension('{IDENTITY_RELIABILITY_URL}')"))
    return found


def _ins_identifier_issues(
    patient: dict[str, Any], identifier: dict[str, Any], where: str, *, ins_profile: bool
) -> Iterator[Issue]:
    system = identifier["system"]
    name = _INS_NAMES[system]
    use = identifier.get("use")
    allowed = " or ".join(sorted(INS_USES[system]))
    if use is None:
        # R4 leaves `use` optional; FR Core's INS slices require it (1..1): an error under the
        # INS profile, a warning otherwise, as a missing identity status is.
        yield _issue("error" if ins_profile else "warning", "required",
                     f"An {name} identifier has use {allowed}, found none", f"{where}.use")
    elif use not in INS_USES[system]:
        yield _issue("error", "value", f"An {name} identifier has use {allowed}, found "
                     f"'{use}'", f"{where}.use")
    value = identifier.get("value")
    if not isinstance(value, str):
        yield _issue("error", "required", f"An {name} identifier needs its value", f"{where}.value")
        return
    if len(value) != 15 or not _NIR.fullmatch(value):
        yield _issue("error", "value",
                     f"An {name} is 15 characters: 13 digits (2A or 2B for a Corsican "
                     f"department) and a 2-digit key", f"{where}.value")
        return
    key = nir_key(value[:13])
    if int(value[13:]) != key:
        yield _issue("error", "value", f"Wrong {name} key {value[13:]}: the first 13 "
                     f"characters give {key:02d}", f"{where}.value")
    temporary = value[0] in "78"
    if system == NIR_SYSTEM and temporary:
        yield _issue("error", "value",
                     f"A temporary number (NIA, starting with 7 or 8) is not a NIR: use the "
                     f"system {NIA_SYSTEM}", f"{where}.system")
    elif system == NIA_SYSTEM and not temporary:
        yield _issue("error", "value",
                     f"A NIR (starting with {value[0]}) is not an NIA: use the system "
                     f"{NIR_SYSTEM}", f"{where}.system")
    yield from _consistency_issues(patient, value, where, old=use == "old")


def _consistency_issues(
    patient: dict[str, Any], value: str, where: str, *, old: bool
) -> Iterator[Issue]:
    """Warnings where sex or birth date disagree with the NIR: either may be the one wrong.
    An `old` NIR (deactivated after a change of sex) is not compared with the sex."""
    prefix = where.rsplit(".", 1)[0]
    gender = patient.get("gender")
    sex = _SEX.get(value[0])
    if sex and not old and gender in ("male", "female") and gender != sex:
        yield _issue("warning", "business-rule",
                     f"The NIR says {sex} (first digit {value[0]}) but gender is {gender}",
                     f"{prefix}.gender")
    birth = patient.get("birthDate")
    if isinstance(birth, str) and len(birth) >= 4:
        year, month = value[1:3], value[3:5]
        wrong_year = birth[2:4] != year
        wrong_month = len(birth) >= 7 and "01" <= month <= "12" and birth[5:7] != month
        if wrong_year or wrong_month:
            yield _issue("warning", "business-rule",
                         f"The NIR says born {month}/{year} (month/year) but birthDate is "
                         f"{birth}", f"{prefix}.birthDate")


def identity_status(
    patient: dict[str, Any], prefix: str = "Patient"
) -> tuple[str | None, list[str], list[Issue]]:
    """The RNIV status, the attributes and the issues read from FR Core's
    `identityReliability` extension (its `identityStatus` sub-extensions)."""
    codes: list[tuple[str, str]] = []
    for i, ext in _dicts(patient.get("extension")):
        if ext.get("url") != IDENTITY_RELIABILITY_URL:
            continue
        for j, sub in _dicts(ext.get("extension")):
            code = _coding_code(sub.get("valueCoding")) if sub.get("url") == "identityStatus" else None
            if code is not None:
                codes.append((code, f"{prefix}.extension[{i}].extension[{j}].value"))
    statuses = [(c, w) for c, w in codes if c in STATUSES]
    attributes = [c for c, _ in codes if c in ATTRIBUTES]
    found = [_issue("warning", "code-invalid",
                    f"Unknown identity status {code!r}: expected one of "
                    f"{', '.join((*STATUSES, *ATTRIBUTES))}", where)
             for code, where in codes if code not in STATUSES and code not in ATTRIBUTES]
    if len({c for c, _ in statuses}) > 1:
        found.append(_issue("error", "business-rule",
                            "An identity has one status, found "
                            + ", ".join(c for c, _ in statuses), statuses[1][1]))
    return (statuses[0][0] if statuses else None), attributes, found


def _coding_code(coding: Any) -> str | None:
    code = coding.get("code") if isinstance(coding, dict) else None
    return code if isinstance(code, str) else None


def trait_issues(patient: dict[str, Any], prefix: str = "Patient") -> list[Issue]:
    """The INS traits a qualified identity must carry: birth name and birth given names (the
    `official` name), birth date, sex, and the COG code of the birthplace."""
    found: list[Issue] = []
    official = [(i, n) for i, n in _dicts(patient.get("name")) if n.get("use") == "official"]
    if not official:
        found.append(_issue("error", "required",
                            "A qualified identity carries its birth name as a name with use "
                            "official", f"{prefix}.name.where(use='official')"))
    for i, name in official[:1]:
        if not isinstance(name.get("family"), str):
            found.append(_issue("error", "required", "The birth name (official family) is "
                                "missing", f"{prefix}.name[{i}].family"))
        if not _list(name.get("given")):
            found.append(_issue("error", "required", "The birth given names (official given) "
                                "are missing", f"{prefix}.name[{i}].given"))
    for element, what in (("birthDate", "birth date"), ("gender", "sex")):
        if element not in patient:
            found.append(_issue("error", "required", f"The {what} is missing",
                                f"{prefix}.{element}"))
    found.extend(_birthplace_issues(patient, prefix))
    return found


def _birthplace_issues(patient: dict[str, Any], prefix: str) -> Iterator[Issue]:
    places = [(i, e) for i, e in _dicts(patient.get("extension")) if e.get("url") == BIRTHPLACE_URL]
    if not places:
        yield _issue("error", "required", "The birthplace (its INSEE COG code) is missing",
                     f"{prefix}.extension('{BIRTHPLACE_URL}')")
        return
    i, place = places[0]
    address = place.get("valueAddress")
    address = address if isinstance(address, dict) else {}
    codes = [(j, _coding_code(e.get("valueCoding")))
             for j, e in _dicts(address.get("extension")) if e.get("url") == INSEE_CODE_URL]
    where = f"{prefix}.extension[{i}].value"
    district = address.get("district")
    if not codes and isinstance(district, str) and _COG.fullmatch(district):
        return  # HL7 v2-to-FHIR maps XAD-9, where IHE PAM FR puts the COG code, to district
    if not codes:
        yield _issue("error", "required", "The birthplace has no INSEE COG code "
                     f"({INSEE_CODE_URL})", f"{where}.extension('{INSEE_CODE_URL}')")
    for j, code in codes:
        if code is None or not _COG.fullmatch(code):
            yield _issue("error", "value", "A COG code is 5 characters: a commune (2A/2B for "
                         "Corsica) or 99 and a country", f"{where}.extension[{j}].value.code")


# --- RPPS ---------------------------------------------------------------------------------


def practitioner_issues(practitioner: dict[str, Any], prefix: str = "Practitioner") -> list[Issue]:
    """What breaks the RPPS rules in a Practitioner's identifiers of the RPPS system."""
    found: list[Issue] = []
    for i, identifier in _dicts(practitioner.get("identifier")):
        if identifier.get("system") == RPPS_SYSTEM:
            found.extend(rpps_issues(identifier.get("value"), f"{prefix}.identifier[{i}].value"))
    return found


def rpps_number(value: str) -> str | None:
    """The 11-digit RPPS number in `value` (an RPPS, or an IDNPS: `8` + RPPS), else None."""
    if value.isascii() and value.isdigit():
        if len(value) == 11:
            return value
        if len(value) == 12 and value[0] == "8":
            return value[1:]
    return None


def rpps_issues(value: Any, where: str) -> Sequence[Issue]:
    """An RPPS number is 11 digits, or 12 as an IDNPS (`8` + RPPS); a wrong Luhn check digit
    is only a warning, as no source yet confirms every number carries one."""
    if not isinstance(value, str):
        return [_issue("error", "required", "An RPPS identifier needs its value", where)]
    number = rpps_number(value)
    if number is None:
        return [_issue("error", "value",
                       "An RPPS number is 11 digits, or 12 as an IDNPS (8 followed by the "
                       "RPPS number)", where)]
    if not luhn_valid(number):
        return [_issue("warning", "value",
                       f"The RPPS number {number} fails its Luhn check digit", where)]
    return []


def issues(resource: dict[str, Any], prefix: str) -> list[Issue]:
    """The French identifier rules that apply to `resource` (a schema-valid resource at
    `prefix`): INS on a Patient, RPPS on a Practitioner; [] for other types."""
    kind = resource["resourceType"]
    if kind == "Patient":
        return patient_issues(resource, prefix)
    if kind == "Practitioner":
        return practitioner_issues(resource, prefix)
    return []
