"""INS (NIR/NIA, identity status, INS traits) and RPPS rules: model/french_ids.py.

Sources: ANS INS referential (key = 97 − first 13 digits mod 97, Corsica 2A → 19, 2B → 18),
RNIV identity statuses, FR Core Patient INS slices (systems and uses).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhir_server.model import french_ids as f
from fhir_server.model.errors import Issue

# The INSEE's published example NIR (2 69 05 49 588 157, key 80): a woman born in May 1969 in
# commune 49588.
NIR = "269054958815780"


def qualified(**changes: Any) -> dict[str, Any]:
    """A Patient with a qualified INS identity and every INS trait."""
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "extension": [
            {"url": f.IDENTITY_RELIABILITY_URL, "extension": [
                {"url": "identityStatus", "valueCoding": {"code": "QUAL"}}]},
            {"url": f.BIRTHPLACE_URL, "valueAddress": {"extension": [
                {"url": f.INSEE_CODE_URL, "valueCoding": {"code": "49588"}}]}},
        ],
        "identifier": [{"use": "official", "system": f.NIR_SYSTEM, "value": NIR}],
        "name": [{"use": "official", "family": "MARTIN", "given": ["Claire", "Anne"]}],
        "gender": "female",
        "birthDate": "1969-05-12",
    }
    patient.update(changes)
    return patient


def with_status(patient: dict[str, Any], *codes: str) -> dict[str, Any]:
    patient = copy.deepcopy(patient)
    patient["extension"][0]["extension"] = [
        {"url": "identityStatus", "valueCoding": {"code": c}} for c in codes]
    return patient


def brief(issues: list[Issue]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(i.severity, i.code, i.expression) for i in issues]


# --- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("first13", "key"), [
    ("2690549588157", 80),  # INSEE's example
    ("1530399216001", 81),
    ("285102A123456", 63),  # Corsica: 2A counts as 19
    ("178052B012345", 61),  # 2B counts as 18
])
def test_nir_key(first13: str, key: int) -> None:
    assert f.nir_key(first13) == key


def test_a_qualified_identity_with_every_trait_passes() -> None:
    assert f.patient_issues(qualified()) == []


def test_corsican_nir_with_its_key_passes() -> None:
    patient = qualified(gender="female", birthDate="1985-10-01")
    patient["identifier"][0]["value"] = "285102A12345663"
    assert f.patient_issues(patient) == []


def test_wrong_key_is_an_error_at_the_value() -> None:
    patient = qualified()
    patient["identifier"][0]["value"] = NIR[:13] + "81"
    [issue] = f.patient_issues(patient)
    assert brief([issue]) == [("error", "value", ("Patient.identifier[0].value",))]
    assert "key 81" in issue.diagnostics and "80" in issue.diagnostics


def test_corsican_key_computed_as_20_is_wrong() -> None:
    patient = qualified(birthDate="1985-10-01")
    first13 = "285102A123456"
    as_twenty = 97 - int(first13.replace("2A", "20")) % 97
    patient["identifier"][0]["value"] = f"{first13}{as_twenty:02d}"
    assert brief(f.patient_issues(patient)) == [("error", "value", ("Patient.identifier[0].value",))]


@pytest.mark.parametrize("value", ["26905495881578", "2690549588157800", "26905495881A780",
                                   "969054958815780", "2690549588157 80"])
def test_malformed_nir(value: str) -> None:
    patient = qualified()
    patient["identifier"][0]["value"] = value
    [issue] = f.patient_issues(patient)
    assert brief([issue]) == [("error", "value", ("Patient.identifier[0].value",))]
    assert "15 characters" in issue.diagnostics


# --- systems and uses ---------------------------------------------------------------------


def test_nia_under_the_nir_system_is_an_error() -> None:
    nia = "7840175123456" + "49"
    patient = qualified(gender="male", birthDate="1984-01-01")
    patient["identifier"][0]["value"] = nia
    issues = f.patient_issues(patient)
    assert ("error", "value", ("Patient.identifier[0].system",)) in brief(issues)
    assert f.NIA_SYSTEM in issues[0].diagnostics


def test_nia_under_its_own_system_with_use_temp_passes() -> None:
    patient = qualified(gender="male", birthDate="1984-01-01")
    patient["identifier"] = [{"use": "temp", "system": f.NIA_SYSTEM, "value": "784017512345649"}]
    assert f.patient_issues(patient) == []


def test_nir_under_the_nia_system_is_an_error() -> None:
    patient = qualified()
    patient["identifier"] = [{"use": "temp", "system": f.NIA_SYSTEM, "value": NIR}]
    assert brief(f.patient_issues(patient)) == [
        ("error", "value", ("Patient.identifier[0].system",))]


@pytest.mark.parametrize(("system", "use", "ok"), [
    (f.NIR_SYSTEM, "official", True), (f.NIR_SYSTEM, "old", True),
    (f.NIR_SYSTEM, "usual", False), (f.NIR_SYSTEM, None, False),
    (f.NIR_TEST_SYSTEM, "official", True), (f.NIR_DEMO_SYSTEM, "official", True),
    (f.NIR_TEST_SYSTEM, "temp", False),
])
def test_uses_per_system(system: str, use: str | None, ok: bool) -> None:
    patient = qualified()
    patient["identifier"] = [{"system": system, "value": NIR, **({"use": use} if use else {})}]
    issues = f.patient_issues(patient)
    if ok:
        assert issues == []
    elif use:
        assert brief(issues) == [("error", "value", ("Patient.identifier[0].use",))]
    else:  # missing: required by FR Core's slice, optional in R4
        assert brief(issues) == [("warning", "required", ("Patient.identifier[0].use",))]
        assert brief(f.patient_issues(patient, ins_profile=True)) == [
            ("error", "required", ("Patient.identifier[0].use",))]


# --- identity status ----------------------------------------------------------------------


@pytest.mark.parametrize("status", ["VIDE", "PROV", "RECUP"])
def test_matricule_on_an_identity_not_qualified_is_an_error(status: str) -> None:
    issues = f.patient_issues(with_status(qualified(), status))
    assert brief(issues) == [("error", "business-rule", ("Patient.identifier[0]",))]
    assert status in issues[0].diagnostics


def test_matricule_on_a_validated_identity_is_a_warning() -> None:
    # RNIV wants QUAL; FR Core's fr-core-1 expects the INS on a VALI identity.
    issues = f.patient_issues(with_status(qualified(), "VALI"))
    assert brief(issues) == [("warning", "business-rule", ("Patient.identifier[0]",))]


def test_matricule_without_identity_status_is_a_warning_unless_the_ins_profile_is_asked() -> None:
    patient = qualified()
    del patient["extension"][0]
    assert brief(f.patient_issues(patient)) == [
        ("warning", "business-rule", ("Patient.identifier[0]",))]
    assert brief(f.patient_issues(patient, ins_profile=True)) == [
        ("error", "required", (f"Patient.extension('{f.IDENTITY_RELIABILITY_URL}')",))]


def test_ins_profile_accepts_a_qualified_identity() -> None:
    assert f.patient_issues(qualified(), ins_profile=True) == []


def test_ins_profile_wants_a_birthplace_and_an_identifier_for_a_provisional_identity() -> None:
    patient = with_status(qualified(), "PROV")
    del patient["identifier"]
    del patient["extension"][1]
    assert brief(f.patient_issues(patient, ins_profile=True)) == [
        ("error", "required", (f"Patient.extension('{f.BIRTHPLACE_URL}')",)),
        ("error", "required", ("Patient.identifier",)),
    ]


def test_ins_profile_wants_the_ins_of_a_validated_identity() -> None:  # fr-core-1
    patient = with_status(qualified(), "VALI")
    patient["identifier"] = [{"system": "http://hospital.example/ipp", "value": "123"}]
    assert brief(f.patient_issues(patient, ins_profile=True)) == [
        ("error", "required", ("Patient.identifier",))]


def test_provisional_identity_without_ins_passes() -> None:
    patient = with_status(qualified(), "PROV")
    del patient["identifier"]
    assert f.patient_issues(patient) == []


def test_homonym_attribute_is_compatible_with_qualified() -> None:
    assert f.patient_issues(with_status(qualified(), "QUAL", "HOMON")) == []


@pytest.mark.parametrize("attribute", ["DOUTE", "FICTI"])
def test_doubtful_or_fictitious_identity_cannot_be_qualified(attribute: str) -> None:
    issues = f.patient_issues(with_status(qualified(), "QUAL", attribute))
    assert brief(issues) == [("error", "business-rule",
                              (f"Patient.extension('{f.IDENTITY_RELIABILITY_URL}')",))]


def test_two_statuses_are_an_error_at_the_second() -> None:
    issues = f.patient_issues(with_status(qualified(), "QUAL", "PROV"))
    assert ("error", "business-rule", ("Patient.extension[0].extension[1].value",)) in brief(issues)


def test_unknown_status_code_is_a_warning() -> None:
    patient = with_status(qualified(), "QUAL", "ZZZ")
    assert brief(f.patient_issues(patient)) == [
        ("warning", "code-invalid", ("Patient.extension[0].extension[1].value",))]


def test_identity_status_reads_the_extension() -> None:
    status, attributes, issues = f.identity_status(with_status(qualified(), "VALI", "HOMON"))
    assert (status, attributes, issues) == ("VALI", ["HOMON"], [])


# --- traits -------------------------------------------------------------------------------


@pytest.mark.parametrize(("drop", "expression"), [
    ("birthDate", "Patient.birthDate"),
    ("gender", "Patient.gender"),
    ("name", "Patient.name.where(use='official')"),
])
def test_missing_trait_is_an_error_with_its_expression(drop: str, expression: str) -> None:
    patient = qualified()
    del patient[drop]
    assert brief(f.patient_issues(patient)) == [("error", "required", (expression,))]


def test_missing_birth_name_and_given_names() -> None:
    patient = qualified(name=[{"use": "usual", "family": "DURAND"},
                              {"use": "official", "text": "Claire MARTIN"}])
    assert brief(f.patient_issues(patient)) == [
        ("error", "required", ("Patient.name[1].family",)),
        ("error", "required", ("Patient.name[1].given",)),
    ]


def test_missing_birthplace_and_cog_code() -> None:
    patient = qualified()
    del patient["extension"][1]
    assert brief(f.patient_issues(patient)) == [
        ("error", "required", (f"Patient.extension('{f.BIRTHPLACE_URL}')",))]
    patient = qualified()
    patient["extension"][1]["valueAddress"] = {"city": "Angers"}
    assert brief(f.patient_issues(patient)) == [
        ("error", "required", (f"Patient.extension[1].value.extension('{f.INSEE_CODE_URL}')",))]


def test_cog_code_in_the_birthplace_district_as_hl7_v2_maps_it() -> None:
    patient = qualified()
    patient["extension"][1]["valueAddress"] = {"district": "49588"}
    assert f.patient_issues(patient) == []
    patient["extension"][1]["valueAddress"] = {"district": "Maine-et-Loire"}
    assert brief(f.patient_issues(patient)) == [
        ("error", "required", (f"Patient.extension[1].value.extension('{f.INSEE_CODE_URL}')",))]


@pytest.mark.parametrize(("code", "ok"), [("49588", True), ("2A004", True), ("99134", True),
                                          ("4958", False), ("2C004", False)])
def test_cog_code_format(code: str, ok: bool) -> None:
    patient = qualified()
    patient["extension"][1]["valueAddress"]["extension"][0]["valueCoding"]["code"] = code
    expected = [] if ok else [("error", "value", ("Patient.extension[1].value.extension[0].value.code",))]
    assert brief(f.patient_issues(patient)) == expected


# --- consistency warnings ---------------------------------------------------------------


def test_sex_inconsistent_with_the_nir_is_a_warning() -> None:
    assert brief(f.patient_issues(qualified(gender="male"))) == [
        ("warning", "business-rule", ("Patient.gender",))]


def test_an_old_nir_is_not_compared_with_the_sex() -> None:
    patient = qualified(gender="male")
    patient["identifier"][0]["use"] = "old"
    male = "169054958815712"  # the new NIR after the change of sex
    patient["identifier"].append({"use": "official", "system": f.NIR_SYSTEM,
                                  "value": f"{male[:13]}{f.nir_key(male[:13]):02d}"})
    assert f.patient_issues(patient) == []


@pytest.mark.parametrize("birth", ["1970-05-12", "1969-06-12"])
def test_birth_date_inconsistent_with_the_nir_is_a_warning(birth: str) -> None:
    assert brief(f.patient_issues(qualified(birthDate=birth))) == [
        ("warning", "business-rule", ("Patient.birthDate",))]


def test_unknown_birth_month_in_the_nir_is_not_compared() -> None:
    patient = qualified()
    first13 = "2693049588157"  # month 30: unknown month (RNIPP)
    patient["identifier"][0]["value"] = f"{first13}{97 - int(first13) % 97:02d}"
    assert f.patient_issues(patient) == []


def test_prefix_names_the_place_of_a_nested_patient() -> None:
    patient = qualified(gender="male")
    [issue] = f.patient_issues(patient, "Bundle.entry[2].resource")
    assert issue.expression == ("Bundle.entry[2].resource.gender",)


# --- RPPS ---------------------------------------------------------------------------------


def practitioner(value: Any) -> dict[str, Any]:
    return {"resourceType": "Practitioner",
            "identifier": [{"system": "http://example.org/x", "value": "1"},
                           {"system": f.RPPS_SYSTEM, "value": value}]}


@pytest.mark.parametrize("value", ["10012345673", "810012345673", "10000000009"])
def test_rpps_and_idnps_pass(value: str) -> None:
    assert f.practitioner_issues(practitioner(value)) == []


@pytest.mark.parametrize("value", ["1001234567", "100123456733", "910012345673",
                                   "1001234567a", "１００１２３４５６７３"])
def test_rpps_of_the_wrong_shape_is_an_error(value: str) -> None:
    assert brief(f.practitioner_issues(practitioner(value))) == [
        ("error", "value", ("Practitioner.identifier[1].value",))]


@pytest.mark.parametrize("value", ["10012345674", "810012345674"])
def test_rpps_failing_luhn_is_only_a_warning(value: str) -> None:
    [issue] = f.practitioner_issues(practitioner(value))
    assert (issue.severity, issue.code) == ("warning", "value")
    assert "Luhn" in issue.diagnostics


def test_rpps_rules_ignore_other_systems() -> None:
    other = {"resourceType": "Practitioner",
             "identifier": [{"system": "http://example.org/x", "value": "abc"}]}
    assert f.practitioner_issues(other) == []


def test_luhn() -> None:
    assert f.luhn_valid("79927398713") and not f.luhn_valid("79927398710")


# --- through the validator (the write path) ---------------------------------------------


def test_the_validator_refuses_a_wrong_key_and_keeps_warnings_as_issues() -> None:
    from fhir_server.model.errors import FhirError, Kind
    from fhir_server.model.validation import Validator

    validator = Validator(use_models=False)
    warned = qualified(gender="male")
    validator.validate(warned)  # a warning alone does not refuse the write
    assert brief(validator.outcome(warned)) == [("warning", "business-rule", ("Patient.gender",))]
    wrong = qualified()
    wrong["identifier"][0]["value"] = NIR[:13] + "00"
    with pytest.raises(FhirError) as raised:
        validator.validate(wrong)
    assert raised.value.kind is Kind.UNPROCESSABLE
    assert brief(list(raised.value.issues)) == [("error", "value", ("Patient.identifier[0].value",))]


def test_the_validator_checks_resources_inside_a_bundle() -> None:
    from fhir_server.model.validation import Validator

    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Organization", "name": "x"}},
        {"resource": practitioner("1001234567")}]}
    assert brief(Validator(use_models=False).outcome(bundle)) == [
        ("error", "value", ("Bundle.entry[1].resource.identifier[1].value",))]
