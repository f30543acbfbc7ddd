"""What the audit trail tells a patient, a legal representative and a practitioner: events
about the data they reach, naming nothing of another patient, and no way to learn whether
another patient exists (docs/audit.md, "Who sees which events"; IHE BALP: one AuditEvent per
patient subject).

Over HTTP with real tokens, on both stores (the platform of tests/trials)."""

from __future__ import annotations

from typing import Any

from tests.trials.conftest import DR, REPRESENTATIVE, STATES, Platform, platform  # noqa: F401

PATIENTS = set(STATES)


def _bundle(p: Platform, path: str, headers: dict[str, str]) -> tuple[int, list[dict[str, Any]]]:
    response = p.client.get(path, headers=headers)
    entries = [e["resource"] for e in response.json().get("entry", [])] if response.status_code == 200 else []
    return response.status_code, entries


def _owner(reference: str) -> str | None:
    """The patient a test resource belongs to (ids are `<patient>` or `<patient>-...`)."""
    kind, _, id = reference.partition("/")
    if kind in ("Patient", "Observation", "Condition", "Consent"):
        return id.split("-")[0]
    return None


def _named(event: dict[str, Any]) -> set[str]:
    """Every patient an event names: as the one who acted, as an entity, or through a
    resource of theirs."""
    references = [e["what"]["reference"] for e in event.get("entity", []) if "what" in e]
    references += [a["who"]["reference"] for a in event["agent"] if "reference" in a["who"]]
    return {o for o in map(_owner, references) if o in PATIENTS}


def _answer(p: Platform, path: str, headers: dict[str, str]) -> tuple[int, int, list[str]]:
    """What a caller learns from a search: status, total, and the shape of each entry."""
    response = p.client.get(path, headers=headers)
    body = response.json()
    return response.status_code, body.get("total", -1), [e["resource"]["resourceType"]
                                                           for e in body.get("entry", [])]


def _everyone_searched(p: Platform) -> None:
    """System searches whose results hold several patients' data (the EHR's)."""
    ehr = p.headers("ehr")
    for path in ("/fhir/Observation?_count=100", "/fhir/Patient?_id=shared,stranger,minor",
                 "/fhir/Condition?_count=100"):
        assert p.client.get(path, headers=ehr).status_code == 200


def _probes(other: str) -> list[str]:
    return [f"/fhir/AuditEvent?patient=Patient/{other}", f"/fhir/AuditEvent?entity=Patient/{other}",
            f"/fhir/AuditEvent?entity=Observation/{other}-obs", f"/fhir/AuditEvent?patient={other}",
            f"/fhir/Patient/{other}/AuditEvent"]


def _no_oracle(p: Platform, headers: dict[str, str], other: str) -> None:
    """Another patient's id and an id nobody has get the same answers."""
    for existing, unknown in zip(_probes(other), _probes("nobody8x3"), strict=True):
        assert _answer(p, existing, headers) == _answer(p, unknown, headers), existing


def test_a_patient_sees_events_about_her_data_naming_nobody_else(platform: Platform) -> None:  # noqa: F811
    _everyone_searched(platform)
    mine = platform.headers("patient", "shared")
    status, events = _bundle(platform, "/fhir/AuditEvent?patient=Patient/shared&_count=1000", mine)
    assert status == 200
    # The EHR's searches read her data: she sees them, and only her part of them.
    ehr_reads = [e for e in events if e["agent"][0].get("altId") == "ehr"
                 and e["subtype"][0]["code"] == "search-type"]
    assert ehr_reads
    assert all(_named(e) == {"shared"} for e in events), [_named(e) for e in events]


def test_a_patient_cannot_tell_another_patient_from_nobody(platform: Platform) -> None:  # noqa: F811
    _everyone_searched(platform)
    _no_oracle(platform, platform.headers("patient", "shared"), "stranger")
    _no_oracle(platform, platform.headers("patient", "shared"), "minor")


def test_a_patient_searching_for_another_is_not_recorded_as_reading_them(
        platform: Platform) -> None:  # noqa: F811
    _everyone_searched(platform)
    mine = platform.headers("patient", "shared")
    for path in _probes("stranger"):
        platform.client.get(path, headers=mine)
    platform.client.get("/fhir/AuditEvent?patient=Patient/shared&_count=1000", headers=mine)
    _, theirs = _bundle(platform, "/fhir/AuditEvent?patient=Patient/stranger&_count=1000",
                        platform.headers("ehr"))
    assert theirs  # the EHR's searches
    assert not [e for e in theirs if e["agent"][0].get("who", {}).get("reference") == "Patient/shared"]
    _, hers = _bundle(platform, "/fhir/AuditEvent?agent=Patient/shared&_count=1000",
                      platform.headers("ehr"))
    assert hers and all(_named(e) <= {"shared"} for e in hers)


def test_a_representative_sees_the_child_events_only(platform: Platform) -> None:  # noqa: F811
    _everyone_searched(platform)
    mother = platform.headers("representative", "minor")
    status, events = _bundle(platform, "/fhir/AuditEvent?patient=Patient/minor&_count=1000", mother)
    assert status == 200 and events
    assert all(_named(e) == {"minor"} for e in events)
    _no_oracle(platform, mother, "stranger")
    _, theirs = _bundle(platform, "/fhir/AuditEvent?_count=1000", platform.headers("ehr"))
    by_her = [e for e in theirs if e["agent"][0].get("who", {}).get("reference") == REPRESENTATIVE]
    assert by_her and all(_named(e) <= {"minor"} for e in by_her)


def test_a_practitioner_sees_only_the_consenting_patients_part(platform: Platform) -> None:  # noqa: F811
    _everyone_searched(platform)
    dr = platform.headers("physician")
    _, patients = _bundle(platform, "/fhir/Patient?_count=100", dr)
    reached = {p["id"] for p in patients}
    assert "shared" in reached and "stranger" not in reached
    # A search returning several of his patients at once: each is told of her own part.
    assert platform.client.get("/fhir/Observation?_count=100", headers=dr).status_code == 200
    status, events = _bundle(platform, "/fhir/AuditEvent?_count=1000", dr)
    assert status == 200 and events
    assert all(len(_named(e)) == 1 and _named(e) <= reached for e in events)
    _no_oracle(platform, dr, "stranger")
    _, shared = _bundle(platform, "/fhir/AuditEvent?patient=Patient/shared&_count=1000",
                        platform.headers("patient", "shared"))
    his = [e for e in shared if e["agent"][0].get("who", {}).get("reference") == DR]
    assert his and all(_named(e) == {"shared"} for e in his)
