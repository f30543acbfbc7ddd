"""Where notifications go, and what people asked of them (docs/notifications.md).

- Addresses come from the person's own resource (Practitioner, Patient, RelatedPerson),
  `telecom`: the e-mail address (`system` email) and the mobile number (`system` sms, or
  `phone` with `use` mobile) of lowest `rank`, not `old` nor past their `period`. They are
  stored encrypted and blind-indexed like the rest of the resource, kept current by whoever
  keeps the directory, and read here through the store: no second copy of them exists.
  User accounts (auth/) hold no address.
- Preferences (channel, language, opt-out) are the person's own, kept sealed in the store's
  schedule (store/schedule.py); only the person, or the operator, changes them, and each
  change is audited. The language falls back to the resource's `communication`, then French.
- Every notification sent, withheld (opt-out) or undeliverable leaves an AuditEvent naming
  the person, the template and the channel: never the address nor the text.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import orjson

from .. import clock
from ..access import Role
from ..model.errors import Kind, fail
from ..store.schedule import Schedule, Scheduling
from .context import Context

PERSON_TYPES = ("Practitioner", "Patient", "RelatedPerson")
CHANNELS = ("email", "sms")
EVENT_SYSTEM = "https://oncotrials.example.org/fhir/CodeSystem/notification-event"
Record = Callable[[dict[str, Any]], Awaitable[str]]
ChannelName = Literal["email", "sms"]


@dataclass(frozen=True, slots=True)
class Preferences:
    """A person's wishes; `language` None: their resource's, else French."""

    channel: ChannelName = "email"
    language: str | None = None
    opted_out: bool = False


@dataclass(frozen=True, slots=True)
class Contact:
    """Where a person can be reached, and in which language."""

    person: str
    email: str | None
    phone: str | None
    language: str


def _person(reference: str) -> tuple[str, str]:
    kind, _, id = reference.partition("/")
    if kind not in PERSON_TYPES or not id or "/" in id:
        raise fail(Kind.INVALID, "value", f"{reference!r} is not a Practitioner, Patient or "
                   "RelatedPerson reference (Type/id).")
    return kind, id


def _current(point: dict[str, Any]) -> bool:
    end = (point.get("period") or {}).get("end")
    return point.get("use") != "old" and (not isinstance(end, str) or end[:10] >= clock.today())


# What an address must look like to be used: a value that is not (a line break in an e-mail
# header, a URL instead of a number) is skipped as if absent.
# ASCII only: an internationalised address needs SMTPUTF8, which few relays offer.
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}")
_PHONE = re.compile(r"\+?[0-9]{6,15}")


def _address(telecom: list[dict[str, Any]], wanted: Callable[[dict[str, Any]], bool],
             form: re.Pattern[str]) -> str | None:
    """The well-formed current address of lowest rank among the points `wanted` picks."""
    found = sorted((p for p in telecom if isinstance(p, dict) and wanted(p) and _current(p)
                    and isinstance(p.get("value"), str)
                    and form.fullmatch(_plain(p["value"], form))),
                   key=lambda p: p.get("rank", 2**31))
    return _plain(found[0]["value"], form) if found else None


def _plain(value: str, form: re.Pattern[str]) -> str:
    """`value` without surrounding space (and, for a number, the spaces, dots and dashes
    people write in it)."""
    return re.sub(r"[\s.()-]", "", value) if form is _PHONE else value.strip()


def _language(resource: dict[str, Any]) -> str | None:
    """The first French or English language of the resource's `communication` (Patient and
    RelatedPerson: a backbone with `language`, the `preferred` first; Practitioner: concepts)."""
    entries = resource.get("communication") or []
    entries = sorted(entries, key=lambda c: not (isinstance(c, dict) and c.get("preferred")))
    for entry in entries:
        concept = entry.get("language", entry) if isinstance(entry, dict) else {}
        for coding in concept.get("coding", []) if isinstance(concept, dict) else []:
            code = str(coding.get("code", ""))[:2].lower()
            if code in ("fr", "en"):
                return code
    return None


async def preferences(schedule: Schedule, person: str) -> Preferences:
    """What `person` asked (the defaults if nothing)."""
    stored = await schedule.preference(person)
    return Preferences(**orjson.loads(stored)) if stored else Preferences()


async def contact(ctx: Context, schedule: Schedule, person: str) -> Contact | None:
    """Where `person` is reached, read from their current resource; None if it does not exist."""
    kind, id = _person(person)
    found = await ctx.store.read(kind, id)
    if found is None or found.body is None:
        return None
    resource = orjson.loads(found.body)
    telecom = resource.get("telecom") or []
    wished = await preferences(schedule, person)
    return Contact(
        person=person,
        email=_address(telecom, lambda p: p.get("system") == "email", _EMAIL),
        phone=_address(telecom, lambda p: p.get("system") == "sms"
                       or (p.get("system") == "phone" and p.get("use") == "mobile"), _PHONE),
        language=wished.language or _language(resource) or "fr")


async def set_preferences(ctx: Context, schedule: Schedule, record: Record, person: str,
                          wished: Preferences) -> None:
    """Keep `wished` as `person`'s preferences, audited. FORBIDDEN unless the caller is that
    person (or the server: the operator's command line); INVALID for an unknown channel or
    language."""
    kind, _ = _person(person)
    principal = ctx.principal
    if principal is None or (principal.role is not Role.SERVER and principal.fhir_user != person):
        raise fail(Kind.FORBIDDEN, "forbidden", "Only a person changes their own notification "
                   "preferences.")
    # An app that may only read (or write something else) must not opt its user out of
    # reminders: it takes the right to update the person's own resource, without a filter.
    if principal.role is not Role.SERVER and principal.grant.restrictions(
            "update", kind, ("patient", "user")) is not None:  # None: some unfiltered scope
        raise fail(Kind.FORBIDDEN, "forbidden", f"Changing notification preferences takes the "
                   f"scope patient/{kind}.u or user/{kind}.u.")
    if wished.channel not in CHANNELS:
        raise fail(Kind.INVALID, "value", f"channel is one of {', '.join(CHANNELS)}.",
                   expression="channel")
    if wished.language not in (None, "fr", "en"):
        raise fail(Kind.INVALID, "value", "language is fr, en or null.", expression="language")
    await schedule.set_preference(person, orjson.dumps(asdict(wished)))
    who = principal.fhir_user or principal.subject or "fhir-server"
    await record(notification_event("preferences", person, who, {
        "channel": wished.channel, "language": wished.language or "(resource)",
        "opted out": str(wished.opted_out).lower()}))


async def forget(ctx: Context, person: str) -> None:
    """Erase what the schedule holds of `person` (services/erase.py, after the store's
    erasure): their preferences, the notices addressed to them, and the items of referrals
    and messages no longer stored (`referral/<id>/...`, `new-message/<id>/...`: the erased
    patient's), in any state. Item bodies are sealed, so they are opened to find the person:
    erasures are rare, the schedule small."""
    schedule = cast(Scheduling, ctx.store).schedule
    keys: list[str] = []
    gone: dict[str, bool] = {}  # Communication id: erased
    for due in await schedule.items(""):
        content = orjson.loads(due.body) if due.body is not None else {}
        kind, referral, *_ = due.key.split("/") + [""]
        of_message = kind in ("referral", "new-message")
        if of_message and referral not in gone:
            gone[referral] = await ctx.store.read("Communication", referral) is None
        if (of_message and gone[referral]) or (
                isinstance(content, dict) and (content.get("data") or {}).get("person") == person):
            keys.append(due.key)
    await schedule.forget(person, keys)


def own(ctx: Context) -> str:
    """The person the caller is (their `fhirUser`); FORBIDDEN for a caller who is none (a
    backend system, a token without fhirUser)."""
    principal = ctx.principal
    person = principal.fhir_user if principal is not None else None
    if person is None or person.partition("/")[0] not in PERSON_TYPES:
        raise fail(Kind.FORBIDDEN, "forbidden", "Notification preferences are a person's own: "
                   "sign in as that person.")
    return person


def parse_preferences(body: Any) -> Preferences:
    """Preferences from their JSON form `{"channel", "language", "optedOut"}` (each optional,
    nothing else); INVALID naming what is wrong."""
    if not isinstance(body, dict) or set(body) - {"channel", "language", "optedOut"}:
        raise fail(Kind.INVALID, "structure", "Preferences are a JSON object with channel, "
                   "language and optedOut only.")
    opted_out = body.get("optedOut", False)
    if not isinstance(opted_out, bool):
        raise fail(Kind.INVALID, "value", "optedOut is true or false.", expression="optedOut")
    # channel and language are checked by set_preferences, whoever sets them
    return Preferences(body.get("channel", "email"), body.get("language"), opted_out)


def preferences_json(wished: Preferences) -> dict[str, Any]:
    """The JSON form of `wished` (parse_preferences reads it back)."""
    return {"channel": wished.channel, "language": wished.language, "optedOut": wished.opted_out}


def notification_event(code: str, person: str, who: str, details: dict[str, str]) -> dict[str, Any]:
    """The AuditEvent of a notification `code` (sent, withheld, undeliverable, preferences)
    about `person`, by `who` (the server for sending): names and codes only, never an
    address or a text."""
    return {
        "resourceType": "AuditEvent",
        "type": {"system": EVENT_SYSTEM, "code": code},
        "action": "U" if code == "preferences" else "E",
        "recorded": clock.instant(),
        "outcome": "0" if code in ("sent", "preferences", "withheld") else "4",
        "agent": [{"who": {"display": who}, "name": who, "requestor": code == "preferences"}],
        "source": {"observer": {"display": "fhir-server"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                             "code": "4", "display": "Application Server"}]},
        "entity": [{"what": {"reference": person},
                    "detail": [{"type": name, "valueString": value} for name, value in details.items()]}],
    }
