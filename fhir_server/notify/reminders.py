"""Reminders of referrals left without an answer (docs/notifications.md).

A referral (trials/referral.py) still at outcome `referred` `after` days after it was sent
reminds its recipients, then again every `repeat` days, `count` reminders at most. When the
referral is stored, its reminders are scheduled (`referral/<id>/<n>`, at the referral's
`sent` time plus the policy's delays); an answer or a withdrawal cancels those not sent.
When one falls due, the referral is read again: if it has been answered meanwhile (the
cancel may not have happened: a crash after the answer's commit), nothing is sent; else
each person behind its recipients (a PractitionerRole's practitioner, the Practitioner
members of a CareTeam or Group) gets a notice of their own (`referral/<id>/<n>/<person>`).
`catch_up` schedules what a crash between a referral's commit and its scheduling missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from .. import clock
from ..model import platform_codes as codes
from ..search import parse_query
from ..services import reach
from ..services.context import Context
from ..store.base import Version
from ..store.schedule import Schedule
from .scheduler import Item, add_all, cancel, enqueue

log = logging.getLogger("fhir_server.notify")
KIND = "referral-reminder"
TEMPLATE = "referral-reminder"


@dataclass(frozen=True, slots=True)
class Policy:
    """When referrals without an answer remind their recipients (settings)."""

    after_days: int = 5
    repeat_days: int = 5
    count: int = 3

    def times(self, sent: datetime) -> list[datetime]:
        return [sent + timedelta(days=self.after_days + n * self.repeat_days)
                for n in range(self.count)]


def _prefix(referral_id: str) -> str:
    return f"referral/{referral_id}/"


def _is_referral(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "Communication" and codes.has_code(
        resource.get("category", []), codes.MESSAGE_SYSTEM, codes.REFERRAL)


def waiting(referral: dict[str, Any]) -> bool:
    """The referral has had no answer yet (nor been withdrawn or closed)."""
    return referral.get("status") == "in-progress" and codes.codes_of(
        referral.get("statusReason", {}), codes.OUTCOME_SYSTEM) == ["referred"]


class Reminders:
    """The commit hook scheduling and cancelling reminders, and the handler of those due."""

    def __init__(self, schedule: Schedule, policy: Policy) -> None:
        self.schedule = schedule
        self.policy = policy

    async def plan(self, referral: dict[str, Any]) -> None:
        """Schedule the reminders of a waiting referral (again: nothing is added twice)."""
        sent = datetime.fromisoformat(referral["sent"].replace("Z", "+00:00"))
        await add_all(self.schedule, KIND, [
            (f"{_prefix(referral['id'])}{n}", {"referral": referral["id"], "n": n}, due)
            for n, due in enumerate(self.policy.times(sent), start=1)])

    async def after_commit(self, ctx: Context, versions: Sequence[Version]) -> None:
        """A commit hook (services/context.py): referrals written now. The schedule is
        written by a task of its own, once this returns: a hook may run inside a
        transaction Bundle's unit of work, which holds the store's write lock until the
        Bundle ends (waiting for it here would wait for ever)."""
        for version in versions:
            if version.resource_type != "Communication" or version.body is None:
                continue
            resource = orjson.loads(version.body)
            if _is_referral(resource):
                later(self._follow(resource))

    async def _follow(self, referral: dict[str, Any]) -> None:
        """Schedule a waiting referral's reminders, or cancel an answered one's. The write is
        committed already: a failure here is logged, not raised (a client would send the
        referral again); `catch_up` schedules it at the next start, and a due reminder of
        an answered referral sends nothing."""
        try:
            if waiting(referral):
                await self.plan(referral)
            else:
                await cancel(self.schedule, _prefix(referral["id"]))
        except Exception:
            log.exception("referral reminders not updated", extra={"referral": referral["id"]})

    async def catch_up(self, ctx: Context) -> None:
        """Schedule the reminders of every waiting referral (at start-up)."""
        query, _ = parse_query("Communication", [
            ("category", f"{codes.MESSAGE_SYSTEM}|{codes.REFERRAL}"), ("status", "in-progress"),
            ("_count", "500")], ctx.registry)
        async for referral in reach.resources(ctx, query):
            if waiting(referral):
                await self.plan(referral)

    async def handler(self, ctx: Context, item: Item) -> None:
        """A reminder due: a notice to each person behind the recipients of a referral that
        still waits."""
        found = await ctx.store.read("Communication", item.data["referral"])
        referral = orjson.loads(found.body) if found is not None and found.body else {}
        if not referral or not waiting(referral):
            return
        now = clock.now()
        for person in await people(ctx, [r.get("reference", "") for r in referral.get("recipient", [])]):
            await enqueue(self.schedule, person=person, template=TEMPLATE, params={},
                          not_before=now, key=f"{item.key}/{person}")


# Schedule writes started by the commit hooks (here and messages.py) and not finished yet (a
# task must be referenced until it ends).
_background: set[asyncio.Task[None]] = set()


def later(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` (a commit hook's schedule writes) in a task of its own; `settled` waits for it."""
    task = asyncio.get_running_loop().create_task(work)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def settled() -> None:
    """Wait until the schedule writes the commit hook started are done (before the store
    closes; tests)."""
    while _background:
        await asyncio.gather(*_background, return_exceptions=True)


async def people(ctx: Context, recipients: Sequence[str]) -> list[str]:
    """The Practitioners behind message recipients (a PractitionerRole, CareTeam or Group;
    a Practitioner is itself), each once, in the order found. Other recipients (a patient)
    are left out."""
    found: list[str] = []
    for recipient in recipients:
        kind, _, id = recipient.partition("/")
        resource = await _current(ctx, kind, id) if kind in (*codes.RECIPIENT_TYPES, "Practitioner") else None
        if resource is None:
            continue
        if kind == "Practitioner":
            members = [{"reference": recipient}]
        elif kind == "PractitionerRole":
            members = [resource.get("practitioner") or {}]
        elif kind == "CareTeam":
            members = [p.get("member") or {} for p in resource.get("participant", [])
                       if not _ended(p)]
        else:
            members = [m.get("entity") or {} for m in resource.get("member", [])
                       if not m.get("inactive") and not _ended(m)]
        for member in members:
            reference = str(member.get("reference", ""))
            # A Practitioner who left (active false) no longer has access: not reminded.
            if reference.startswith("Practitioner/") and await _current(
                    ctx, "Practitioner", reference.partition("/")[2]) is not None:
                found.append(reference)
    return list(dict.fromkeys(found))


def _ended(element: dict[str, Any]) -> bool:
    """Whether `element`'s period ended before today."""
    end = (element.get("period") or {}).get("end")
    return isinstance(end, str) and end[:10] < clock.today()


async def _current(ctx: Context, kind: str, id: str) -> dict[str, Any] | None:
    """The stored resource, unless it is missing, inactive or its period ended."""
    version = await ctx.store.read(kind, id) if id else None
    resource = orjson.loads(version.body) if version is not None and version.body else None
    if not isinstance(resource, dict) or resource.get("active") is False or _ended(resource):
        return None
    return resource
