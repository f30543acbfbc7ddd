"""Referral reminders on a simulated clock, through a real SMTP server on loopback with
STARTTLS (docs/notifications.md): the first on day 5 and not day 4, then per the repeat
policy; an answer cancels them; opted-out people get none, audited; a failing relay loses
nothing. On both stores.

Requests are made at the real time (tokens are checked against it); the scheduler runs on
the simulated clock, days after them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from fhir_server import clock
from fhir_server.app import create_app
from fhir_server.access import server_principal
from fhir_server.notify import runner
from fhir_server.notify.reminders import settled
from fhir_server.notify.templates import LANGUAGES, render
from fhir_server.services.notifications import EVENT_SYSTEM, Preferences, set_preferences
from fhir_server.settings import Settings
from tests.conftest import authorized
from tests.http.helpers import send
from tests.notify.mail import SmtpServer
from tests.trials.conftest import OUTCOMES, Platform, build

DAY = timedelta(days=1)
LINK = "https://portal.example/"
REMINDER = "referral-reminder"
TEAM_MEMBER = "Practitioner/dr-team"


class World(Platform):
    """The referral platform, its SMTP relay and its clock."""

    def __init__(self, client: TestClient, smtp: SmtpServer) -> None:
        super().__init__(client)
        self.smtp = smtp
        self.start: datetime | None = None  # when the first referral was sent
        self.days = 0.0  # simulated days since `start`

    def run_due(self) -> int:
        """One turn of the server's scheduler."""
        app: Any = self.client.app
        scheduler = runner.scheduler(app.state.settings, app.state.context, app.state.recorder.record)
        assert self.client.portal is not None and self.start is not None
        self.client.portal.call(settled)  # the referral hook's writes
        with clock.frozen(self.start + self.days * DAY):
            return cast(int, self.client.portal.call(scheduler.run_due))

    def advance(self, days: float) -> int:
        self.days += days
        return self.run_due()

    def received(self, template: str = REMINDER) -> list[Message]:
        """The e-mails of `template` received so far (told apart by their subject: a
        referral also sends new-message notices)."""
        subjects = {render(template, language, {}, LINK).subject for language in LANGUAGES}
        return [m for m in self.smtp.mailbox.received if m["Subject"] in subjects]

    def mail(self, template: str = REMINDER) -> list[tuple[str, str]]:
        """(recipient, Content-Language) of the e-mails of `template` received so far."""
        return [(m["X-Envelope-To"], m["Content-Language"]) for m in self.received(template)]

    def events(self, code: str, template: str | None = REMINDER) -> list[dict[str, Any]]:
        """The notification AuditEvents `code` of `template` (None: of any or none)."""
        response = self.client.get(f"/fhir/AuditEvent?type={EVENT_SYSTEM}|{code}&_count=100",
                                   headers=self.headers("ehr"))
        assert response.status_code == 200, response.text
        found = [e["resource"] for e in response.json().get("entry", [])]
        return [e for e in found if template is None or
                {d["type"]: d.get("valueString") for d in e["entity"][0].get("detail", [])}
                .get("template") == template]


@pytest.fixture(params=["sqlite", "mongodb-double"])
def world(request: pytest.FixtureRequest, tmp_path: Path, signing_keys: bytes) -> Iterator[World]:
    from tests.store.conftest import STORES

    data = tmp_path / "data"
    data.mkdir()
    (data / "signing-keys.json").write_bytes(signing_keys)
    with SmtpServer(tmp_path) as smtp:
        settings = Settings(
            data_dir=data, base_url="http://testserver/fhir", notify_link="https://portal.example/",
            smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_sender="platform@oncotrials.example",
            smtp_ca_file=smtp.ca_file, notify_poll_seconds=10**6)
        app = create_app(settings, None if request.param == "sqlite" else STORES[request.param](data))
        with authorized(TestClient(app)) as client:
            build(client)
            for id, email, language in (("dr-inv", "inv@example.org", "en"),
                                        ("dr-team", "team@example.org", "fr")):
                body = {"resourceType": "Practitioner", "id": id, "active": True,
                        "telecom": [{"system": "email", "value": email}],
                        "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": language}]}]}
                assert send(client, "PUT", f"/fhir/Practitioner/{id}", body).status_code == 200
            yield World(client, smtp)


def _refer(world: World) -> str:
    response = world.refer("shared")
    assert response.status_code == 201, response.text
    world.start = world.start or datetime.fromisoformat(response.json()["sent"])
    return cast(str, response.json()["id"])


def test_a_referral_without_answer_reminds_its_recipients_on_day_5_not_day_4(world: World) -> None:
    _refer(world)
    assert world.advance(4) == 2  # the new-message notices of the referral (test_new_message.py)
    assert world.advance(0.99) == 0
    assert world.mail() == []
    world.advance(0.01)
    assert sorted(world.mail()) == [("inv@example.org", "en"), ("team@example.org", "fr")]
    assert all(world.smtp.mailbox.encrypted)
    for mail in world.received():
        text = cast(Message, mail).get_payload(decode=True).decode()
        assert "https://portal.example/" in text
        # nothing of the record: not the patient, the study, the note
        assert not {"Shared", "HER2", "study", "ECOG"} & set(text.replace(".", " ").split())
    french = next(m for m in world.received() if m["Content-Language"] == "fr")
    assert french["Subject"] == "Rappel : un message attend votre réponse"
    assert len(world.events("sent")) == 2


def test_reminders_repeat_per_policy_then_stop(world: World) -> None:
    _refer(world)
    world.advance(5)
    assert len(world.mail()) == 2
    world.advance(4.9)
    assert len(world.mail()) == 2
    world.advance(0.1)  # day 10
    assert len(world.mail()) == 4
    world.advance(5)  # day 15: the third and last
    assert len(world.mail()) == 6
    world.advance(365 * 3)
    assert len(world.mail()) == 6


def test_an_answer_cancels_the_reminders_not_sent(world: World) -> None:
    first, second = _refer(world), _refer(world)
    assert world.answer(first, "preselected", reason="Screening visit next week.").status_code == 201
    world.advance(5.01)  # the second was sent a moment after the first
    assert len(world.mail()) == 2  # only the second referral's
    assert world.answer(second, "not-preselected", reason="Not eligible.").status_code == 201
    world.advance(30)
    assert len(world.mail()) == 2


def test_an_opted_out_person_gets_none_and_it_is_audited(world: World) -> None:
    app: Any = world.client.app
    ctx = app.state.context
    portal = world.client.portal
    assert portal is not None
    portal.call(set_preferences, replace(ctx, principal=server_principal("cli")),
                runner.schedule_of(ctx.store), app.state.recorder.record, TEAM_MEMBER,
                Preferences(opted_out=True))
    _refer(world)
    world.advance(5)
    assert world.mail() == [("inv@example.org", "en")]
    [withheld] = world.events("withheld")
    assert withheld["entity"][0]["what"] == {"reference": TEAM_MEMBER}
    assert {d["type"]: d["valueString"] for d in withheld["entity"][0]["detail"]}["why"] == "opted out"
    [changed] = world.events("preferences", None)
    assert changed["entity"][0]["what"] == {"reference": TEAM_MEMBER}


def test_a_failing_relay_loses_no_reminder_and_sends_none_twice(world: World) -> None:
    _refer(world)
    world.smtp.mailbox.failures = 5
    world.advance(5)
    assert world.mail() == []
    for _ in range(10):
        world.advance(1 / 24)
    assert sorted(world.mail()) == [("inv@example.org", "en"), ("team@example.org", "fr")]
    world.advance(1)
    assert len(world.mail()) == 2


def test_an_answer_in_a_transaction_bundle_cancels_too(world: World) -> None:
    """The hook runs inside the Bundle's unit of work, which holds the store's write lock:
    its schedule writes wait for the Bundle to end (they used to wait for ever)."""
    referral = _refer(world)
    answer = {"resourceType": "Communication", "status": "completed",
              "inResponseTo": [{"reference": f"Communication/{referral}"}],
              "reasonCode": [{"coding": [{"system": OUTCOMES, "code": "preselected"}]}],
              "payload": [{"contentString": "Screening visit next week."}]}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": answer, "request": {"method": "POST", "url": "Communication"}}]}
    done = send(world.client, "POST", "/fhir", bundle, **world.headers("investigator"))
    assert done.status_code == 200, done.text
    world.advance(30)
    assert world.mail() == []


def test_an_erased_patients_referral_leaves_no_reminder(world: World) -> None:
    referral = _refer(world)
    schedule = runner.schedule_of(world.client.app.state.context.store)  # type: ignore[attr-defined]
    world.client.portal.call(settled)  # the referral hook schedules from a task of its own
    assert world.client.portal.call(schedule.items, f"referral/{referral}/")  # type: ignore[attr-defined]
    closed = {"resourceType": "ResearchStudy", "id": "study-1", "status": "completed"}
    assert send(world.client, "PUT", "/fhir/ResearchStudy/study-1", closed).status_code == 200
    # the trial is over: no legal hold, a true erasure (a held patient is pseudonymised)
    erased = world.client.post("/fhir/Patient/shared/$erase?reason=asked",
                               headers=world.headers("patient", "shared"))
    assert erased.status_code == 200, erased.text
    assert world.client.portal.call(schedule.items, f"referral/{referral}/") == []  # type: ignore[attr-defined]
    world.advance(30)
    assert world.mail() == [], world.mail()


def test_people_who_lost_access_are_not_reminded(world: World) -> None:
    """After the referral: dr-team leaves (Practitioner.active false), the investigator's
    role ends (PractitionerRole.period): neither is reminded; a CareTeam participant whose
    period ended neither."""
    _refer(world)
    gone = {"resourceType": "Practitioner", "id": "dr-team", "active": False,
            "telecom": [{"system": "email", "value": "team@example.org"}]}
    assert send(world.client, "PUT", "/fhir/Practitioner/dr-team", gone).status_code == 200
    ended = {"resourceType": "PractitionerRole", "id": "inv-bordeaux", "active": True,
             "period": {"end": "2020-01-01"}, "practitioner": {"reference": "Practitioner/dr-inv"}}
    assert send(world.client, "PUT", "/fhir/PractitionerRole/inv-bordeaux", ended).status_code == 200
    world.advance(5.01)
    assert world.mail() == []
