"""Sending a scheduled notice (notify/scheduler.py, kind `notice`) to its person: their
preferences and address (services/notifications.py), the text in their language
(notify/templates.py), the channel they prefer among those configured and that they have an
address for, and an AuditEvent of what happened."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping

from ..services import notifications
from ..services.context import Context
from ..services.notifications import Contact, Record
from ..store.schedule import Schedule
from .channels import Channel, ChannelDown, Message, Undeliverable, message_ref
from .scheduler import Item, Retry
from .templates import render

log = logging.getLogger("fhir_server.notify")
SERVER = "fhir-server (notifications)"
TEMPLATE_SIGN_IN = "sign-in-code"


def _address(contact: Contact, channel: str) -> str | None:
    return contact.email if channel == "email" else contact.phone


class Delivery:
    """The handler of notices: `channels` by name (`email`, `sms`: those configured), `link`
    the platform's address every message points to."""

    def __init__(self, ctx: Context, schedule: Schedule, channels: Mapping[str, Channel],
                 link: str, record: Record) -> None:
        self.ctx = ctx
        self.schedule = schedule
        self.channels = dict(channels)
        self.link = link
        self.record = record

    async def __call__(self, item: Item) -> None:
        person, template = item.data["person"], item.data["template"]
        wished = await notifications.preferences(self.schedule, person)
        details = {"template": template, "message": message_ref(item.key)}
        if wished.opted_out:
            await self._audit("withheld", person, {**details, "why": "opted out"})
            return
        if not self.channels:  # kept until the operator configures one
            raise Retry("no notification channel is configured")
        contact = await notifications.contact(self.ctx, self.schedule, person)
        order = [wished.channel, *(c for c in notifications.CHANNELS if c != wished.channel)]
        usable = [c for c in order if c in self.channels and contact and _address(contact, c)]
        if contact is None or not usable:
            await self._audit("undeliverable", person, {**details, "why": "no address"})
            return
        text = render(template, contact.language, item.data["params"], self.link)
        refused = []
        for channel in usable:  # the preferred first; the other if it refuses the message
            message = Message(_address(contact, channel) or "", text.subject, text.body,
                              contact.language, message_ref(item.key))
            try:
                await self.channels[channel].send(message)
            except ChannelDown as why:
                raise Retry(str(why)) from None
            except Undeliverable as why:
                refused.append(f"{channel}: {why}")
                continue
            await self._audit("sent", person, {**details, "channel": channel,
                                               "language": contact.language})
            return
        await self._audit("undeliverable", person, {**details, "channel": ", ".join(usable),
                                                    "why": "; ".join(refused)})

    async def _audit(self, code: str, person: str, details: dict[str, str]) -> None:
        await audit(self.record, code, person, details)


class SignInCodes:
    """Sends sign-in codes (auth/email_codes.py) by e-mail, at once: the person waits for it."""

    def __init__(self, ctx: Context, schedule: Schedule, channel: Channel, link: str,
                 record: Record) -> None:
        self.ctx = ctx
        self.schedule = schedule
        self.channel = channel
        self.link = link
        self.record = record

    async def send(self, person: str, code: str, minutes: int, language: str) -> bool:
        """Whether the code went to `person`'s e-mail address (audited either way, without it)."""
        contact = await notifications.contact(self.ctx, self.schedule, person)
        details = {"template": TEMPLATE_SIGN_IN, "channel": "email",
                   "message": message_ref(f"sign-in/{secrets.token_hex(16)}")}
        if contact is None or contact.email is None:
            await audit(self.record, "undeliverable", person, {**details, "why": "no address"})
            return False
        text = render(TEMPLATE_SIGN_IN, language, {"code": code, "minutes": str(minutes)}, self.link)
        try:
            await self.channel.send(Message(contact.email, text.subject, text.body, language,
                                            details["message"]))
        except (ChannelDown, Undeliverable) as why:
            await audit(self.record, "undeliverable", person, {**details, "why": str(why)})
            return False
        await audit(self.record, "sent", person, details)
        return True


async def audit(record: Record, code: str, person: str, details: dict[str, str]) -> None:
    """Record the AuditEvent of a notification. The message has gone (or will never go): a
    failing audit store must not make the scheduler send it again, so the failure is logged,
    not raised."""
    try:
        await record(notifications.notification_event(code, person, SERVER, details))
    except Exception:
        log.exception("the AuditEvent of a notification could not be recorded",
                      extra={"code": code, "message": details.get("message")})
