"""Notices of new messages in a referral's thread (docs/notifications.md, "New messages").

When the server stores a message of the referral workflow (a referral, an answer, a
question, a reply, an updated copy of the record, a request to refer: the kinds only the
server writes, model/platform_codes.py `SERVER_MADE`), each person behind its recipients
gets a `new-message` notice (`new-message/<Communication id>/<person>`): the investigators
behind a referral's PractitionerRole, CareTeam or Group, the referring physician of an
answer or a question. Only practitioners are told: these messages are never addressed to a
patient, and a patient is not told of an investigator's message (docs/referrals.md).
The notice says only that a message waits, with the platform's link.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson

from .. import clock
from ..model import platform_codes as codes
from ..services.context import Context
from ..store.base import Version
from ..store.schedule import Schedule
from .reminders import later, people
from .scheduler import enqueue

log = logging.getLogger("fhir_server.notify")
TEMPLATE = "new-message"
FAMILY = "new-message"  # the first segment of the keys (erasure: services/notifications.py)


def key(message_id: str, person: str) -> str:
    return f"{FAMILY}/{message_id}/{person}"


def _kind(resource: dict[str, Any]) -> str | None:
    """The referral-message category of a server-made Communication, else None."""
    found = codes.codes_of(resource.get("category", []), codes.MESSAGE_SYSTEM)
    return next((code for code in found if code in codes.SERVER_MADE), None)


class Messages:
    """The commit hook telling the recipients of new thread messages."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    async def after_commit(self, ctx: Context, versions: Sequence[Version]) -> None:
        """A commit hook (services/context.py): the messages created now (their first
        version: a referral's later versions, an updated payload or an outcome, are no new
        message). The schedule is written from a task of its own, once the write's unit of
        work has ended (reminders.py says why)."""
        for version in versions:
            if version.resource_type != "Communication" or version.body is None or version.version != 1:
                continue
            resource = orjson.loads(version.body)
            if _kind(resource) is not None:
                later(self._tell(ctx, resource))

    async def _tell(self, ctx: Context, message: dict[str, Any]) -> None:
        """A notice to each person behind the message's recipients. The message is committed
        already: a failure is logged, not raised."""
        try:
            now = clock.now()
            recipients = [str(r.get("reference", "")) for r in message.get("recipient", [])]
            for person in await people(ctx, recipients):
                await enqueue(self.schedule, person=person, template=TEMPLATE, params={},
                              not_before=now, key=key(message["id"], person))
        except Exception:
            log.exception("new-message notices not scheduled", extra={"message": message.get("id")})
