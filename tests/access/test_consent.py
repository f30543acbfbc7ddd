"""access/consent.py: when a patient's Consents let a practitioner reach the record and let
it be shared with investigators (status, period, permit, nested and separate denies)."""

from __future__ import annotations

from fhir_server.access import consent as rules
from tests.builders import consent, deny_provision

DR = "Practitioner/dr"
TODAY = "2026-12-02"


def test_an_active_permit_in_force_naming_the_practitioner_reaches() -> None:
    assert rules.reaches([consent("p", actor=DR)], DR, TODAY)
    assert not rules.reaches([consent("p", actor="Practitioner/other")], DR, TODAY)
    assert not rules.reaches([], DR, TODAY)


def test_status_and_period_must_hold() -> None:
    assert not rules.reaches([consent("p", actor=DR, status="inactive")], DR, TODAY)
    assert not rules.reaches([consent("p", actor=DR, status="proposed")], DR, TODAY)
    assert not rules.reaches([consent("p", actor=DR, end="2021-01-01")], DR, TODAY)
    assert not rules.reaches([consent("p", actor=DR, start="2027-01-01")], DR, TODAY)
    assert rules.reaches([consent("p", actor=DR, end=TODAY)], DR, TODAY)


def test_a_research_consent_does_not_open_the_record() -> None:
    assert not rules.reaches([consent("p", "research", actor=DR)], DR, TODAY)


def test_a_nested_deny_for_the_practitioner_wins() -> None:
    assert not rules.reaches([consent("p", actor=DR, deny=[deny_provision(DR)])], DR, TODAY)
    other = consent("p", actor=DR, deny=[deny_provision("Practitioner/other")])
    assert rules.reaches([other], DR, TODAY)
    later = consent("p", actor=DR, deny=[deny_provision(DR, start="2027-01-01")])
    assert rules.reaches([later], DR, TODAY)


def test_a_separate_deny_consent_wins_for_the_actor_it_names_or_for_all() -> None:
    permit = consent("p", actor=DR)
    assert not rules.reaches([permit, consent("p", actor=DR, type="deny")], DR, TODAY)
    assert not rules.reaches([permit, consent("p", type="deny")], DR, TODAY)  # restriction
    assert rules.reaches([permit, consent("p", actor="Practitioner/x", type="deny")], DR, TODAY)
    assert rules.reaches([permit, consent("p", type="deny", status="inactive")], DR, TODAY)


def test_sharing_needs_a_research_permit_and_no_objection() -> None:
    share = consent("p", "research")
    assert rules.sharing([share], TODAY) is share
    assert rules.sharing([consent("p", actor=DR)], TODAY) is None
    assert rules.sharing([share, consent("p", "research", type="deny")], TODAY) is None
    assert rules.sharing([consent("p", "research", deny=[deny_provision()])], TODAY) is None
    assert rules.sharing([share, consent("p", type="deny")], TODAY) is None  # restriction
    assert rules.sharing([consent("p", "research", status="inactive")], TODAY) is None


def test_physicians_are_the_practitioners_reaching_the_record() -> None:
    consents = [consent("p", actor=DR), consent("p", actor="Practitioner/b", deny=[deny_provision("Practitioner/b")]),
                consent("p", actor="Organization/o")]
    assert rules.physicians(consents, TODAY) == {DR}


def test_a_practitioner_attests_an_agreement_naming_them_with_its_evidence() -> None:
    assert rules.attests_access(consent("p", actor=DR), DR, TODAY)
    assert not rules.attests_access(consent("p", actor=DR, evidence=False), DR, TODAY)
    assert not rules.attests_access(consent("p", actor="Practitioner/x"), DR, TODAY)
    assert not rules.attests_access(consent("p", "research", actor=DR), DR, TODAY)
    assert not rules.attests_access(consent("p", actor=DR, status="draft"), DR, TODAY)


def test_references_are_read_in_any_form() -> None:
    assert rules.local("http://example.org/fhir/Practitioner/dr/_history/3") == DR
    absolute = consent("p", actor=DR, deny=[deny_provision("http://example.org/fhir/Practitioner/dr")])
    assert not rules.reaches([absolute], DR, TODAY)


def test_a_permit_narrowed_to_part_of_the_record_opens_nothing_to_a_practitioner() -> None:
    """A relative's delegation (class, action) naming a practitioner as well does not give
    that practitioner the whole record, nor make them a referring physician."""
    narrowed = consent("p", actor=DR)
    narrowed["provision"]["class"] = [{"system": "http://hl7.org/fhir/resource-types",
                                       "code": "Observation"}]
    assert not rules.reaches([narrowed], DR, TODAY)
    assert rules.physicians([narrowed], TODAY) == set()
    acting = consent("p", actor=DR)
    acting["provision"]["action"] = [{"coding": [{"code": "access"}]}]
    assert not rules.reaches([acting], DR, TODAY)
    # A whole-record permit beside it still counts.
    assert rules.reaches([narrowed, consent("p", actor=DR)], DR, TODAY)


def test_periods_are_compared_as_instants() -> None:
    """A period's bounds are instants in their own time zone; a partial date (year,
    year-month, date) starts at its first instant and ends at its last."""
    def holds(start: str | None, end: str | None, now: str) -> bool:
        period = {k: v for k, v in (("start", start), ("end", end)) if v}
        return rules.in_period({"period": period}, now)

    # 08:00 at +02:00 is 06:00Z: over by 20:00Z the same day, not yet at 05:59Z.
    assert not holds(None, "2030-06-30T08:00:00+02:00", "2030-06-30T20:00:00Z")
    assert holds(None, "2030-06-30T08:00:00+02:00", "2030-06-30T05:59:59Z")
    # 01:00 at +02:00 is 23:00Z the day before.
    assert not holds(None, "2030-06-30T01:00:00+02:00", "2030-06-29T23:30:00Z")
    assert holds("2030-06-30T10:00:00Z", None, "2030-06-30T10:00:00.000001Z")
    assert not holds("2030-06-30T10:00:00Z", None, "2030-06-30T09:59:59Z")
    # Partial dates: the end is the last instant of its year, month or day; the start the first.
    assert holds(None, "2030", "2030-12-31T23:59:59Z") and not holds(None, "2030", "2031-01-01T00:00:00Z")
    assert holds(None, "2030-02", "2030-02-28T12:00:00Z") and not holds(None, "2030-02", "2030-03-01T00:00:00Z")
    assert holds(None, "2030-06-30", "2030-06-30T23:59:59Z")
    assert holds("2030-06", None, "2030-06-01T00:00:00Z") and not holds("2030-06", None, "2030-05-31T23:59:59Z")
    # A bound that is no date holds nothing.
    assert not holds(None, "soon", "2030-06-30T00:00:00Z")
