"""The mapping engine and the maps of mappings/hl7v2 without a store: each message of
messages/ becomes the resources the HL7 v2-to-FHIR IG 1.0.0 maps (and the IHE PAM French
additions) say; bad input is refused with the HL7 error code and location."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.interop.hl7v2 import MappingFileError, load
from fhir_server.interop.hl7v2.mapping import MAPPINGS, Instance
from fhir_server.interop.hl7v2.message import decode
from fhir_server.interop.hl7v2.problems import Refused
from tests.interop.hl7v2.conftest import message

MAPS = load()
IPP = "urn:oid:1.2.250.1.999.1.1"
NIR = "urn:oid:1.2.250.1.213.1.4.8"
RELIABILITY = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"


def _instances(name: str) -> dict[str, list[Instance]]:
    by_name: dict[str, list[Instance]] = {}
    for instance in MAPS.instances(decode(message(name))):
        by_name.setdefault(instance.name, []).append(instance)
    return by_name


def _refusal(raw: bytes) -> Refused:
    with pytest.raises(Refused) as caught:
        MAPS.instances(decode(raw))
    return caught.value


def _status(resource: dict[str, Any]) -> str:
    [extension] = [e for e in resource["extension"] if e["url"] == RELIABILITY]
    [status] = extension["extension"]
    assert status["url"] == "identityStatus"
    return str(status["valueCoding"]["code"])


def test_pid_becomes_a_patient_with_its_ipp_its_ins_and_its_identity_status() -> None:
    [patient] = _instances("adt_a01_admit.hl7")["patient"]
    resource = patient.resource
    assert resource["identifier"][0] == {
        "value": "100001", "system": IPP,
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI"}]}}
    assert resource["identifier"][1]["system"] == NIR
    assert resource["identifier"][1]["value"] == "270056912345647"
    assert resource["identifier"][1]["type"]["coding"] == [
        {"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203", "code": "INS-NIR"}]
    assert resource["name"] == [{"family": "MARTIN", "given": ["Hélène", "Marie"], "use": "official"},
                                {"family": "DURAND", "given": ["Hélène"], "use": "usual"}]
    assert resource["birthDate"] == "1970-05-12" and resource["gender"] == "female"
    assert resource["address"] == [{"line": ["12 rue des Lilas"], "city": "Lyon", "postalCode": "69003",
                                    "country": "FRA", "use": "home"}]
    assert resource["telecom"] == [{"value": "0472000000", "use": "home", "system": "phone"}]
    assert _status(resource) == "VALI" and resource["active"] is True


def test_each_ins_oid_gives_its_fr_core_identifier_type() -> None:
    raw = message("adt_a01_admit.hl7")
    for oid, code in (("1.2.250.1.213.1.4.9", "INS-NIA"), ("1.2.250.1.213.1.4.10", "INS-NIR-TEST"),
                      ("1.2.250.1.213.1.4.11", "INS-NIR-DEMO")):
        [patient] = [i for i in MAPS.instances(decode(raw.replace(b"1.2.250.1.213.1.4.8", oid.encode())))
                     if i.name == "patient"]
        assert patient.resource["identifier"][1]["system"] == f"urn:oid:{oid}"
        assert patient.resource["identifier"][1]["type"]["coding"][0]["code"] == code


def test_each_ins_gets_the_use_fr_core_slices_it_by() -> None:
    """FR Core's INS slices require `use` (official for a NIR, temp for an NIA): without it
    every INS an EHR sends would carry a validation warning, and fail the INS profile."""
    raw = message("adt_a01_admit.hl7")
    for oid, use in (("1.2.250.1.213.1.4.8", "official"), ("1.2.250.1.213.1.4.9", "temp"),
                     ("1.2.250.1.213.1.4.10", "official"), ("1.2.250.1.213.1.4.11", "official")):
        [patient] = [i for i in MAPS.instances(decode(raw.replace(b"1.2.250.1.213.1.4.8", oid.encode())))
                     if i.name == "patient"]
        assert patient.resource["identifier"][1]["use"] == use
    assert "use" not in _instances("adt_a01_admit.hl7")["patient"][0].resource["identifier"][0]  # the IPP


def test_pid_32_statuses_prov_and_qual() -> None:
    assert _status(_instances("adt_a04_register.hl7")["patient"][0].resource) == "PROV"
    assert _status(_instances("adt_a08_update.hl7")["patient"][0].resource) == "QUAL"


def test_pid_32_attributes_are_kept_beside_the_status() -> None:
    """PID-32 repeats (IHE PAM FR): the status, then RNIV attributes (homonym, doubtful,
    fictitious); each is an identityStatus of the extension, none dropped."""
    raw = message("adt_a08_update.hl7").replace(b"|QUAL\r", b"|QUAL~HOMON\r")
    [patient] = [i for i in MAPS.instances(decode(raw)) if i.name == "patient"]
    [extension] = [e for e in patient.resource["extension"] if e["url"] == RELIABILITY]
    assert [(e["url"], e["valueCoding"]["code"]) for e in extension["extension"]] == [
        ("identityStatus", "QUAL"), ("identityStatus", "HOMON")]


def test_pv1_becomes_the_visit_and_zbe_a_movement_part_of_it() -> None:
    found = _instances("adt_a01_admit.hl7")
    [patient], [visit], [movement] = found["patient"], found["encounter"], found["movement"]
    assert visit.resource["identifier"] == [{"value": "V0001", "system": "urn:oid:1.2.250.1.999.1.2",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "VN"}]}}]
    assert visit.resource["class"]["code"] == "IMP" and visit.resource["status"] == "in-progress"
    assert visit.resource["period"] == {"start": "2025-03-01T10:00:00+01:00"}  # Paris in winter
    assert visit.resource["location"] == [{"location": {
        "display": "CARDIO", "identifier": {"system": "urn:oid:1.2.250.1.999.1.5"}}}]
    assert visit.resource["subject"] == {"reference": patient.full_url}
    assert movement.resource["identifier"] == [{"value": "MVT-0001", "system": "urn:oid:1.2.250.1.999.1.3"}]
    assert movement.resource["status"] == "in-progress"
    assert movement.resource["partOf"] == {"reference": visit.full_url}
    assert movement.resource["subject"] == {"reference": patient.full_url}
    assert movement.resource["serviceProvider"] == {
        "display": "Cardiologie", "identifier": {"value": "4001", "system": "urn:oid:1.2.250.1.999.1.4"}}
    assert movement.resource["class"]["code"] == "IMP"  # ZBE has none: the visit's PV1-2


def test_zbe_update_and_cancel() -> None:
    [updated] = _instances("adt_z99_movement_update.hl7")["movement"]
    assert updated.resource["status"] == "in-progress"
    assert updated.resource["serviceProvider"]["identifier"]["value"] == "4002"
    cancelled = _instances("adt_a11_cancel_admit.hl7")
    assert cancelled["movement"][0].resource["status"] == "entered-in-error"
    assert cancelled["encounter"][0].resource["status"] == "cancelled"
    assert cancelled["patient"][0].rule["write"] == "create"  # A11 never rewrites the patient


def test_a28_without_visit_number_gives_no_encounter() -> None:
    found = _instances("adt_a28_add_person.hl7")
    assert set(found) == {"patient"}


def test_a40_gives_the_survivor_and_the_record_merged_into_it() -> None:
    found = _instances("adt_a40_merge.hl7")
    [survivor], [merged] = found["patient"], found["merged"]
    assert survivor.resource["identifier"][0]["value"] == "200001"
    assert merged.resource["identifier"][0]["value"] == "200002"
    assert merged.rule["merge_into"] == "patient"


def test_oru_gives_a_report_collecting_its_observations() -> None:
    found = _instances("oru_r01_results.hl7")
    [report], observations = found["report"], found["observation"]
    assert report.resource["status"] == "final"
    assert report.resource["code"]["coding"][0] == {
        "code": "24323-8", "display": "Comprehensive metabolic panel", "system": "http://loinc.org"}
    assert report.resource["identifier"][0] == {"value": "LAB-5501", "system": "urn:oid:1.2.250.1.999.1.7"}
    assert report.resource["result"] == [{"reference": o.full_url} for o in observations]
    glucose, creatinine, comment = (o.resource for o in observations)
    assert glucose["valueQuantity"] == {"value": 1.05, "code": "g/L", "unit": "gramme par litre",
                                        "system": "http://unitsofmeasure.org"}
    assert glucose["referenceRange"] == [{"text": "0.70-1.10"}]
    assert glucose["interpretation"] == [{"coding": [{"code": "N"}]}]
    assert glucose["effectiveDateTime"] == "2025-03-01T08:00:00+01:00"
    assert creatinine["valueQuantity"]["value"] == 9.8
    assert comment["valueString"] == "Prélèvement à jeun" and "valueQuantity" not in comment
    # No OBX-21: each observation is identified within its report by OBX-1.
    assert [o["identifier"][0]["value"] for o in (glucose, creatinine, comment)] == [
        "LAB-5501-1", "LAB-5501-2", "LAB-5501-3"]
    assert {o["status"] for o in (glucose, creatinine, comment)} == {"final"}
    assert found["patient"][0].rule["write"] == "create"  # a result never rewrites the patient


def test_latin1_message_is_read_by_its_msh_18_and_z_segments_are_kept() -> None:
    raw = message("adt_a01_latin1_zsegments.hl7")
    assert "Françoise".encode("latin-1") in raw
    parsed = decode(raw)
    assert [s.id for s in parsed.segments] == ["MSH", "EVN", "PID", "PV1", "ZBE", "ZFA", "ZFV"]
    [patient] = [i for i in MAPS.instances(parsed) if i.name == "patient"]
    assert patient.resource["name"][0] == {"family": "LEFÈVRE", "given": ["Françoise"], "use": "official"}


def test_a_utf8_byte_order_mark_and_newlines_are_accepted() -> None:
    raw = b"\xef\xbb\xbf" + message("adt_a01_admit.hl7").replace(b"\r", b"\r\n")
    [patient] = [i for i in MAPS.instances(decode(raw)) if i.name == "patient"]
    assert patient.resource["name"][0]["given"][0] == "Hélène"


def test_escape_sequences_are_decoded() -> None:
    raw = message("adt_a28_add_person.hl7").replace(b"PETIT^Jeanne", b"PETIT\\T\\FILS^Jeanne")
    [patient] = MAPS.instances(decode(raw))
    assert patient.resource["name"][0]["family"] == "PETIT&FILS"


def test_times_without_offset_take_the_default_zone_and_offsets_are_kept() -> None:
    raw = message("adt_a01_admit.hl7")
    summer = raw.replace(b"|20250301100000\r", b"|20250701100000\r")
    [visit] = [i for i in MAPS.instances(decode(summer)) if i.name == "encounter"]
    assert visit.resource["period"]["start"] == "2025-07-01T10:00:00+02:00"
    given = raw.replace(b"|20250301100000\r", b"|202503011000-0500\r")
    [visit] = [i for i in MAPS.instances(decode(given)) if i.name == "encounter"]
    assert visit.resource["period"]["start"] == "2025-03-01T10:00:00-05:00"


@pytest.mark.parametrize(("name", "ack", "code", "where"), [
    ("bad_missing_pid3.hl7", "AE", "101", "PID-3"),
    ("bad_date.hl7", "AE", "102", "PID-7"),
    ("bad_version.hl7", "AR", "203", "MSH-12"),
    ("bad_unknown_trigger.hl7", "AR", "201", "MSH-9.2"),
])
def test_bad_messages_are_refused_with_code_and_location(name: str, ack: str, code: str, where: str) -> None:
    refused = _refusal(message(name))
    [problem] = refused.problems
    assert (refused.ack, problem.code.value, str(problem.location)) == (ack, code, where)


@pytest.mark.parametrize(("old", "new", "ack", "code", "where"), [
    (b"|8859/1", b"|KOI8-R", "AR", "103", "MSH-18"),  # unknown character set
    (b"|P|2.5|", b"|T|2.5|", "AR", "202", "MSH-11"),  # training message
    (b"ADT^A01^ADT_A01", b"MFN^M02^MFN_M02", "AR", "200", "MSH-9.1"),  # unknown type
    (b"ADT^A01^ADT_A01", b"ADT^A01^ADT_A05", "AR", "201", "MSH-9"),  # wrong structure
    (b"|A01-L001|", b"||", "AR", "101", "MSH-10"),  # no control id
    (b"|F|||", b"|X|||", "AE", "103", "PID-8"),  # sex not in table 0001
    (b"|I|CARDIO", b"|Q|CARDIO", "AE", "103", "PV1-2"),  # patient class not in table 0004
    (b"|PROV\r", b"|PERHAPS\r", "AE", "103", "PID-32"),
    (b"CHU_DEMO&1.2.250.1.999.1.1&ISO^PI", b"CHU_DEMO^PI", "AE", "101", "PID-3.4"),  # no authority
])
def test_other_bad_input_is_refused(old: bytes, new: bytes, ack: str, code: str, where: str) -> None:
    raw = message("adt_a01_latin1_zsegments.hl7")
    assert old in raw
    with pytest.raises(Refused) as caught:
        MAPS.instances(decode(raw.replace(old, new, 1)))
    [problem] = caught.value.problems
    assert (caught.value.ack, problem.code.value, str(problem.location)) == (ack, code, where)


@pytest.mark.parametrize("encoding", [b"^", b"^~\\", b"^~\\&&", b"^~X&", b"^~ &", b"^^\\&", b"^~\\&#$"])
def test_malformed_encoding_characters_are_rejected(encoding: bytes) -> None:
    """MSH-2 holds four distinct separators (five from v2.7, the truncation character), none
    a letter, digit, space or the field separator: anything else would be read with garbled
    separators (an `X` escape character, the field separator repeating) and stored so."""
    raw = message("adt_a01_admit.hl7").replace(b"MSH|^~\\&|", b"MSH|" + encoding + b"|", 1)
    with pytest.raises(Refused) as caught:
        decode(raw)
    assert caught.value.ack == "AR" and str(caught.value.problems[0].location) == "MSH-2"


def test_the_truncation_character_of_v2_7_is_accepted() -> None:
    raw = message("adt_a01_admit.hl7").replace(b"MSH|^~\\&|", b"MSH|^~\\&#|", 1)
    assert decode(raw).header.control_id == "A01-0001"


def test_bytes_the_charset_refuses_and_a_missing_msh_are_rejected() -> None:
    utf8_named = message("adt_a01_latin1_zsegments.hl7").replace(b"|8859/1", b"|UNICODE UTF-8")
    with pytest.raises(Refused) as caught:
        decode(utf8_named)
    assert caught.value.ack == "AR" and str(caught.value.problems[0].location) == "MSH-18"
    with pytest.raises(Refused) as caught:
        decode(b"PID|1||123\r")
    assert caught.value.ack == "AR" and caught.value.problems[0].code.value == "100"


def test_a_missing_segment_is_an_error() -> None:
    raw = b"\r".join(s for s in message("adt_a01_admit.hl7").split(b"\r") if not s.startswith(b"PID"))
    refused = _refusal(raw)
    assert (refused.ack, refused.problems[0].code.value, str(refused.problems[0].location)) == (
        "AE", "100", "PID")


def _edited(tmp_path: Path, relative: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of mappings/ with one file changed by `edit`."""
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    content = orjson.loads((root / relative).read_bytes())
    edit(content)
    (root / relative).write_bytes(orjson.dumps(content))
    return root


def test_a_mapping_file_breaking_the_schema_is_refused_at_load(tmp_path: Path) -> None:
    def bad_path(pid: dict[str, Any]) -> None:
        pid["fields"][0]["target"] = "identifier..value"
    with pytest.raises(MappingFileError, match="PID.json"):
        load(_edited(tmp_path, "hl7v2/segments/PID.json", bad_path))


@pytest.mark.parametrize(("key", "value", "complaint"), [
    ("datatype", "XYZ", "unknown datatype XYZ"),
    ("vocabulary", "nowhere", "unknown vocabulary nowhere"),
])
def test_a_mapping_naming_what_does_not_exist_is_refused_at_load(
        tmp_path: Path, key: str, value: str, complaint: str) -> None:
    def unknown(pid: dict[str, Any]) -> None:
        pid["fields"][0][key] = value
    with pytest.raises(MappingFileError, match=complaint):
        load(_edited(tmp_path, "hl7v2/segments/PID.json", unknown))


def test_a_message_map_naming_an_unknown_resource_is_refused(tmp_path: Path) -> None:
    def orphan(oru: dict[str, Any]) -> None:
        oru["resources"][3]["parent"] = "nothing"
    with pytest.raises(MappingFileError, match="names no resource"):
        load(_edited(tmp_path, "hl7v2/messages/ORU_R01.json", orphan))


def test_a_trigger_mapped_twice_is_refused(tmp_path: Path) -> None:
    def twice(person: dict[str, Any]) -> None:
        person["events"]["A01"] = "ADT_A01"
    with pytest.raises(MappingFileError, match="ADT\\^A01 is mapped twice"):
        load(_edited(tmp_path, "hl7v2/messages/ADT_person.json", twice))
