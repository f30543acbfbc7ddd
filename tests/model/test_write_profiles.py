"""Profiles required on write, per resource type and client (setting `write_profiles`)."""

from __future__ import annotations

import pytest

from fhir_server.model.profiles import FR_CORE_PATIENT_INS, WriteProfiles, write_profiles
from fhir_server.settings import Settings, WriteProfileSetting

ECLAIRE = "https://interop.esante.gouv.fr/ig/fhir/eclaire/StructureDefinition/eclaire-researchstudy"


def test_a_rule_without_clients_applies_to_every_client_and_one_with_clients_to_those() -> None:
    rules = write_profiles([
        WriteProfileSetting(type="ResearchStudy", profiles=[ECLAIRE]),
        WriteProfileSetting(type="Patient", profiles=[FR_CORE_PATIENT_INS], clients=["ehr-chu", "mllp"]),
    ])
    assert rules.for_write("ResearchStudy", "any-app") == (ECLAIRE,)
    assert rules.for_write("ResearchStudy", None) == (ECLAIRE,)
    assert rules.for_write("Patient", "ehr-chu") == (FR_CORE_PATIENT_INS,)
    assert rules.for_write("Patient", "mllp") == (FR_CORE_PATIENT_INS,)
    assert rules.for_write("Patient", "portal") == ()
    assert rules.for_write("Observation", "ehr-chu") == ()
    assert WriteProfiles().for_write("Patient", "ehr-chu") == ()


@pytest.mark.parametrize(("rule", "message"), [
    (WriteProfileSetting(type="Patient", profiles=["https://example.org/StructureDefinition/x"]),
     "not held"),
    (WriteProfileSetting(type="Practitioner", profiles=[FR_CORE_PATIENT_INS]), "constrains Patient"),
])
def test_a_profile_not_held_or_of_another_type_is_refused_at_start(rule: WriteProfileSetting,
                                                                  message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_profiles([rule])


def test_the_setting_reads_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_SERVER_WRITE_PROFILES",
                       f'[{{"type": "Patient", "profiles": ["{FR_CORE_PATIENT_INS}"], "clients": ["mllp"]}}]')
    [rule] = Settings().write_profiles
    assert (rule.type, rule.profiles, rule.clients) == ("Patient", [FR_CORE_PATIENT_INS], ["mllp"])

