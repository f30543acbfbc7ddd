"""A research Consent denying one recipient their record: `$refer` to them and
`$update-record` of a referral they received are both refused, nothing stored or sent
(trials/snapshot.py `check_recipients`)."""

from __future__ import annotations

from typing import Any

from tests.builders import consent, deny_provision
from tests.http.helpers import send
from tests.trials.conftest import ROLE, TEAM, Platform, platform  # noqa: F401


def _deny(platform: Platform, patient: str, recipient: str) -> None:
    body = consent(patient, "research", deny=[deny_provision(recipient)])
    body.pop("id", None)
    r = send(platform.client, "POST", "/fhir/Consent", body, **platform.headers("patient", patient))
    assert r.status_code == 201, r.text


def _stored(platform: Platform) -> dict[str, Any]:
    ehr = platform.headers("ehr")
    return {t: platform.client.get(f"/fhir/{t}?_summary=count", headers=ehr).json()["total"]
            for t in ("Bundle", "Communication", "ResearchSubject")}


def test_update_record_is_refused_when_one_recipient_is_denied(platform: Platform) -> None:
    referral = platform.refer("leaving")
    assert referral.status_code == 201, referral.text
    _deny(platform, "leaving", ROLE)
    before = _stored(platform)
    r = send(platform.client, "POST", f"/fhir/Communication/{referral.json()['id']}/$update-record",
             **platform.headers("physician"))
    assert r.status_code == 403, r.text
    assert ROLE in r.json()["issue"][0]["diagnostics"]
    assert _stored(platform) == before


def test_refer_is_refused_when_one_recipient_is_denied(platform: Platform) -> None:
    _deny(platform, "minor", TEAM)
    before = _stored(platform)
    r = platform.refer("minor", recipients=(ROLE, TEAM))
    assert r.status_code == 403, r.text
    assert TEAM in r.json()["issue"][0]["diagnostics"]
    assert _stored(platform) == before
    allowed = platform.refer("minor", recipients=(ROLE,))  # the others still receive it
    assert allowed.status_code == 201, allowed.text
