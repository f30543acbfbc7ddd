"""Sending a notice (notify/delivery.py) on every store: the person's preferred channel when
they have an address for it, the other one otherwise; opt-out honoured; undeliverable notices
audited and done with; notices kept while no channel is configured. And who may change
preferences (services/notifications.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from fhir_server import clock
from fhir_server.access import server_principal
from fhir_server.app import build_context
from fhir_server.model.errors import FhirError
from fhir_server.notify import Retry
from fhir_server.notify.channels import ChannelDown, Message, Undeliverable
from fhir_server.notify.delivery import Delivery
from fhir_server.notify.scheduler import NOTICE, Item, enqueue
from fhir_server.notify.templates import TemplateError
from fhir_server.search import extract
from fhir_server.services.context import Context
from fhir_server.services.notifications import Preferences, set_preferences
from fhir_server.settings import Settings
from fhir_server.store.base import Store, Write
from tests.notify.conftest import scheduling

pytestmark = pytest.mark.anyio


class Outbox:
    """A channel that keeps what it is given, or fails as told."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.sent: list[Message] = []
        self.failure = failure

    async def send(self, message: Message) -> None:
        if self.failure:
            raise self.failure
        self.sent.append(message)


class Events(list[dict[str, Any]]):
    async def __call__(self, event: dict[str, Any]) -> str:
        self.append(event)
        return str(len(self))

    def codes(self) -> list[tuple[str, str]]:
        return [(e["type"]["code"], e["entity"][0]["what"]["reference"]) for e in self]


PEOPLE = {
    "both": [{"system": "email", "value": "second@example.org", "rank": 2},
             {"system": "email", "value": " both@example.org ", "rank": 1},
             {"system": "email", "value": "ended@example.org", "rank": 0,
              "period": {"end": "2020-01-01"}},
             {"system": "email", "value": "bcc@evil.example\nBcc: all@example.org", "rank": 0},
             {"system": "email", "value": "hélène@example.org", "rank": 0},  # not ASCII
             {"system": "phone", "use": "mobile", "value": "+33 6 00 00 00 01"}],
    "mobile": [{"system": "sms", "value": "+33600000002"},
               {"system": "email", "value": "old@example.org", "use": "old"}],
    "none": [{"system": "phone", "use": "work", "value": "+33100000000"}],
}


async def _context(store: Store, tmp_path: Any) -> Context:
    for id, telecom in PEOPLE.items():
        body = {"resourceType": "Practitioner", "id": id, "telecom": telecom}
        await store.commit([Write("Practitioner", id, body, extract(body))])
    ctx = build_context(Settings(data_dir=tmp_path), store)
    return replace(ctx, principal=server_principal("test"))


def _item(person: str, key: str = "k/1") -> Item:
    return Item(key, NOTICE, {"person": f"Practitioner/{person}", "template": "new-message",
                              "params": {}}, 1)


async def test_the_preferred_channel_is_used_when_the_person_has_its_address(store: Store, tmp_path: Any) -> None:
    ctx, schedule, events = await _context(store, tmp_path), scheduling(store).schedule, Events()
    email, sms = Outbox(), Outbox()
    delivery = Delivery(ctx, schedule, {"email": email, "sms": sms}, "https://portal.example/", events)
    await delivery(_item("both"))
    await set_preferences(ctx, schedule, events, "Practitioner/both", Preferences(channel="sms", language="en"))
    await delivery(_item("both", "k/2"))
    await delivery(_item("mobile", "k/3"))  # prefers e-mail, has only a mobile (the address is old)
    assert [m.to for m in email.sent] == ["both@example.org"]
    assert [(m.to, m.language) for m in sms.sent] == [("+33600000001", "en"), ("+33600000002", "fr")]
    assert sms.sent[0].body == "You have a new message on the platform: https://portal.example/"
    assert events.codes() == [("sent", "Practitioner/both"), ("preferences", "Practitioner/both"),
                              ("sent", "Practitioner/both"), ("sent", "Practitioner/mobile")]


async def test_no_address_or_a_refused_one_is_audited_and_done_with(store: Store, tmp_path: Any) -> None:
    ctx, schedule, events = await _context(store, tmp_path), scheduling(store).schedule, Events()
    await Delivery(ctx, schedule, {"email": Outbox()}, "https://p/", events)(_item("none"))
    await Delivery(ctx, schedule, {"email": Outbox()}, "https://p/", events)(_item("nobody"))
    refusing = Outbox(Undeliverable("550"))
    await Delivery(ctx, schedule, {"email": refusing}, "https://p/", events)(_item("both"))
    assert [code for code, _ in events.codes()] == ["undeliverable"] * 3
    assert "both@example.org" not in str(events)


async def test_a_channel_down_or_none_configured_keeps_the_notice(store: Store, tmp_path: Any) -> None:
    ctx, schedule, events = await _context(store, tmp_path), scheduling(store).schedule, Events()
    with pytest.raises(Retry):
        await Delivery(ctx, schedule, {"email": Outbox(ChannelDown("421"))}, "https://p/", events)(_item("both"))
    with pytest.raises(Retry):
        await Delivery(ctx, schedule, {}, "https://p/", events)(_item("both"))
    assert events == []


async def test_an_opted_out_person_gets_nothing(store: Store, tmp_path: Any) -> None:
    ctx, schedule, events = await _context(store, tmp_path), scheduling(store).schedule, Events()
    await set_preferences(ctx, schedule, events, "Practitioner/both", Preferences(opted_out=True))
    email = Outbox()
    await Delivery(ctx, schedule, {"email": email}, "https://p/", events)(_item("both"))
    assert email.sent == [] and events.codes()[-1] == ("withheld", "Practitioner/both")


async def test_only_the_person_changes_their_preferences(store: Store, tmp_path: Any) -> None:
    ctx, schedule, events = await _context(store, tmp_path), scheduling(store).schedule, Events()
    other = replace(ctx, principal=None)
    with pytest.raises(FhirError) as refused:
        await set_preferences(other, schedule, events, "Practitioner/both", Preferences(opted_out=True))
    assert refused.value.kind.name == "FORBIDDEN"
    with pytest.raises(FhirError):
        await set_preferences(ctx, schedule, events, "Practitioner/both",
                              Preferences(channel="pigeon"))  # type: ignore[arg-type]
    with pytest.raises(FhirError):
        await set_preferences(ctx, schedule, events, "Observation/1", Preferences())
    assert events == [] and await schedule.preference("Practitioner/both") is None


async def test_a_notice_with_parameters_its_template_does_not_take_is_refused(store: Store) -> None:
    schedule = scheduling(store).schedule
    at = datetime(2027, 1, 1, tzinfo=UTC)
    for template, params in (("nope", {}), ("new-message", {"name": "Hélène Martin"}),
                             ("retention-warning", {"date": "soon, for Mrs Martin"})):
        with pytest.raises(TemplateError):
            await enqueue(schedule, person="Patient/1", template=template, params=params,
                          not_before=at, key="x")
    assert await schedule.items("") == []
    assert await enqueue(schedule, person="Patient/1", template="retention-warning",
                         params={"date": "2027-02-01"}, not_before=at, key="x")
    assert clock.micros(at) == (await schedule.items("x"))[0].due


async def test_a_refused_preferred_channel_falls_back_to_the_other(store: Store, tmp_path: Any) -> None:
    ctx, schedule, events = await _context(store, tmp_path), scheduling(store).schedule, Events()
    sms = Outbox()
    channels = {"email": Outbox(Undeliverable("550")), "sms": sms}
    await Delivery(ctx, schedule, channels, "https://p/", events)(_item("both"))
    assert [m.to for m in sms.sent] == ["+33600000001"]
    assert events.codes() == [("sent", "Practitioner/both")]
