"""New-message notices of the referral thread (docs/notifications.md, "New messages"),
through a real SMTP server on loopback with STARTTLS, on the simulated clock, on both
stores: a referral tells its recipients, an answer or a question tells the referring
physician, once each, with the link and nothing of the record; an opted-out person gets
none (audited); replaying the commit hook or restarting the scheduler sends nothing again."""

from __future__ import annotations

from dataclasses import replace
from email.message import Message
from typing import Any, cast

from fhir_server.access import server_principal
from fhir_server.notify import runner
from fhir_server.notify.messages import TEMPLATE, Messages
from fhir_server.notify.reminders import settled
from fhir_server.services.notifications import Preferences, set_preferences
from tests.http.helpers import send
from tests.notify.test_reminders import World, _refer, world  # noqa: F401 - the fixture
from tests.trials.conftest import DR

RECORD_WORDS = {"Shared", "HER2", "HER2+", "study", "ECOG", "metastatic", "Screening", "visit"}


def _new_messages(world: World) -> list[tuple[str, str]]:
    """(recipient, Content-Language) of the new-message e-mails received so far."""
    return world.mail(TEMPLATE)


def _with_physician_address(world: World) -> None:
    body = {"resourceType": "Practitioner", "id": DR.partition("/")[2], "active": True,
            "telecom": [{"system": "email", "value": "dr@example.org"}]}
    assert send(world.client, "PUT", f"/fhir/{DR}", body).status_code == 200


def _texts(world: World) -> list[str]:
    return [cast(Message, m).get_payload(decode=True).decode() for m in world.received(TEMPLATE)]


def _template_events(world: World, code: str) -> list[dict[str, Any]]:
    """The notification AuditEvents `code` of new-message notices."""
    return world.events(code, TEMPLATE)


def test_a_referral_tells_each_recipient_once_with_the_link_and_no_record(world: World) -> None:
    _refer(world)
    world.advance(0.001)  # the notices are due when the hook ran, a moment after `sent`
    assert sorted(_new_messages(world)) == [("inv@example.org", "en"), ("team@example.org", "fr")]
    for text in _texts(world):
        assert "https://portal.example/" in text
        assert not RECORD_WORDS & set(text.replace(".", " ").split())
    assert len(_template_events(world, "sent")) == 2
    world.advance(1)
    assert len(_new_messages(world)) == 2


def test_an_answer_tells_the_referring_physician(world: World) -> None:
    _with_physician_address(world)
    referral = _refer(world)
    world.advance(0.001)  # the notices are due when the hook ran, a moment after `sent`
    assert world.answer(referral, "preselected", reason="Screening visit next week.").status_code == 201
    world.advance(0.01)
    assert ("dr@example.org", "fr") in _new_messages(world)  # no language given: French
    assert len(_new_messages(world)) == 3
    assert "Screening" not in " ".join(_texts(world))
    world.advance(10)
    assert len(_new_messages(world)) == 3


def _thread_message(world: World, actor: str, responds_to: str, text: str) -> str:
    body = {"resourceType": "Communication", "status": "completed",
            "inResponseTo": [{"reference": responds_to}], "payload": [{"contentString": text}]}
    response = send(world.client, "POST", "/fhir/Communication", body, **world.headers(actor, "shared"))
    assert response.status_code == 201, response.text
    return cast(str, response.json()["id"])


def test_a_question_tells_the_physician_and_the_reply_the_asker(world: World) -> None:
    _with_physician_address(world)
    referral = _refer(world)
    question = _thread_message(world, "investigator", f"Communication/{referral}", "Is the last ECOG recent?")
    world.advance(0.001)  # the notices are due when the hook ran, a moment after `sent`
    assert sorted(_new_messages(world)) == [
        ("dr@example.org", "fr"), ("inv@example.org", "en"), ("team@example.org", "fr")]
    _thread_message(world, "physician", f"Communication/{question}", "ECOG 1 on 2026-11-20.")
    world.advance(0.001)
    # the question came from the investigator's role: its practitioner is told, not the team
    assert sorted(_new_messages(world))[1:] == [
        ("inv@example.org", "en"), ("inv@example.org", "en"), ("team@example.org", "fr")]
    assert "ECOG" not in " ".join(_texts(world))


def test_an_opted_out_recipient_gets_none_and_it_is_audited(world: World) -> None:
    app: Any = world.client.app
    ctx = app.state.context
    assert world.client.portal is not None
    world.client.portal.call(set_preferences, replace(ctx, principal=server_principal("cli")),
                             runner.schedule_of(ctx.store), app.state.recorder.record,
                             "Practitioner/dr-team", Preferences(opted_out=True))
    _refer(world)
    world.advance(0.001)  # the notices are due when the hook ran, a moment after `sent`
    assert _new_messages(world) == [("inv@example.org", "en")]
    [withheld] = _template_events(world, "withheld")
    assert withheld["entity"][0]["what"] == {"reference": "Practitioner/dr-team"}


def test_replaying_the_hook_or_restarting_sends_nothing_twice(world: World) -> None:
    referral = _refer(world)
    world.advance(0.001)  # the notices are due when the hook ran, a moment after `sent`
    assert len(_new_messages(world)) == 2
    app: Any = world.client.app
    ctx = app.state.context
    portal = world.client.portal
    assert portal is not None
    version = portal.call(ctx.store.read, "Communication", referral)
    hook = Messages(runner.schedule_of(ctx.store)).after_commit
    portal.call(hook, ctx, [version])  # a replay of the referral's commit hook
    portal.call(settled)
    world.advance(0.01)  # a new scheduler each turn, as after a restart
    world.advance(1)
    assert len(_new_messages(world)) == 2


def test_a_later_version_of_the_referral_is_no_new_message(world: World) -> None:
    """An updated copy of the record is a message of its own (record-update), once; the
    referral's new version (its payload) is no second one."""
    referral = _refer(world)
    world.advance(0.001)  # the notices are due when the hook ran, a moment after `sent`
    updated = world.client.post(f"/fhir/Communication/{referral}/$update-record",
                                headers=world.headers("physician", "shared"))
    assert updated.status_code in (200, 201), updated.text
    world.advance(0.01)
    assert len(_new_messages(world)) == 4  # the referral's two, the record-update's two


def test_an_erased_patients_messages_leave_no_notice(world: World) -> None:
    referral = _refer(world)
    app: Any = world.client.app
    schedule = runner.schedule_of(app.state.context.store)
    portal = world.client.portal
    assert portal is not None
    portal.call(settled)
    assert portal.call(schedule.items, f"new-message/{referral}/")
    closed = {"resourceType": "ResearchStudy", "id": "study-1", "status": "completed"}
    assert send(world.client, "PUT", "/fhir/ResearchStudy/study-1", closed).status_code == 200
    erased = world.client.post("/fhir/Patient/shared/$erase?reason=asked",
                               headers=world.headers("patient", "shared"))
    assert erased.status_code == 200, erased.text
    assert portal.call(schedule.items, f"new-message/{referral}/") == []
    world.advance(1)
    assert _new_messages(world) == []
