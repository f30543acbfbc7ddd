"""Subscriptions in the service layer (Subscriptions R5 Backport IG 1.1.0 on R4): creating
one (its owner kept with it), `$status` and `$events`, and what the dispatcher asks before and
after each notification: whether its owner still reaches each event's resource (consent
withdrawn: not sent), and the AuditEvent of what was sent. The dispatcher itself lives in
subscriptions/, below services; app.py hands it a `Desk`."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import orjson

from .. import clock
from ..access import Claims, Principal, Role, server_principal
from ..audit.events import notification_event
from ..model.errors import FhirError, Kind, fail
from ..model.ids import new_id
from ..model.numbers import whole_number
from ..model.platform_codes import CANONICAL
from ..model.types import is_valid_id
from ..search import ReferencePredicate, TokenPredicate, parse_query
from ..store.base import Outbox, Version
from ..subscriptions import (CONTENTS, CREDENTIALS_PREFIX, FILTER_CRITERIA, Content, Event, Plan, check_new,
                             dump, kept_events, load_credentials, notification, one, owner_key, pending_key,
                             purged, purged_key, state, state_key, status_parameters, TOLD_PREFIX, unmask)
from . import crud, reach, search, server_writes
from .principals import principal_of
from .context import Context, Payload, after_commit
from .guard import Decision, decision, note, reachable, visible

Record = Callable[[dict[str, Any]], Awaitable[str]]
SUBSCRIPTION_STATUSES = ("requested", "active", "error", "off")  # R4 subscription-status
MAX_REPLAY = 1000  # events one $events call returns at most (ask again from the next number)
# A topic's own test of an event beyond its criteria and filters, run as the subscription's
# owner: (context, the resource's id, the patients the event names, the filters search cannot
# answer) -> news or not. The trial-matching topic's checks that the patients its re-match job
# found are still the physician's and consenting (trials/alerts.py); app.py hands them over.
TopicTest = Callable[[Context, str, tuple[str, ...], dict[str, str]], Awaitable[bool]]
OWNER = f"{CANONICAL}/StructureDefinition/subscription-owner"


def owner_of(principal: Principal | None) -> dict[str, Any]:
    """What is kept of a subscription's creator: the claims its rights are rebuilt from when
    a notification is sent (so a consent withdrawn since counts)."""
    if principal is None:
        raise fail(Kind.FORBIDDEN, "forbidden", "Subscriptions are created by a known caller.")
    return {"server": principal.server, "subject": principal.subject,
            "client_id": principal.client_id, "scope": principal.grant.text(),
            "patient": principal.patient, "fhir_user": principal.fhir_user,
            "admin": principal.role is Role.ADMINISTRATOR,
            "acts_for": list(principal.recipients or ()) if principal.fhir_user is None else []}


async def _principal(ctx: Context, owner: dict[str, Any]) -> Principal:
    if owner["server"]:
        return server_principal(owner["subject"])
    return await principal_of(ctx, Claims(
        subject=owner["subject"], client_id=owner["client_id"], scope=owner["scope"],
        patient=owner["patient"], fhir_user=owner["fhir_user"], admin=owner["admin"],
        acts_for=tuple(owner["acts_for"])))


def _stamp_owner(subscription: dict[str, Any], principal: Principal | None) -> None:
    """Name the user creating a Subscription as its owner (search parameter `owner`), in
    place of whatever the client wrote there; a system client's have none."""
    others = [e for e in subscription.get("extension", []) if e.get("url") != OWNER]
    user = principal.fhir_user if principal is not None else None
    if user:
        others.append({"url": OWNER, "valueReference": {"reference": user}})
    if others:
        subscription["extension"] = others
    else:
        subscription.pop("extension", None)


def _creator(principal: Principal | None) -> str | None:
    """The fhirUser of the user creating a Subscription ("" for none); None for a system
    client or the server, which answer for no one user."""
    if principal is not None and not principal.confined:
        return None
    return (principal.fhir_user if principal is not None else None) or ""


async def _check_named(ctx: Context, subscription: dict[str, Any]) -> None:
    """400 for a filter naming one resource (`_id`, a typed reference) the creator does not
    reach: the event counter of `$status` would tell them of its changes."""
    criteria = str(subscription.get("criteria", ""))
    texts = [criteria] if "?" in criteria else [
        str(e.get("valueString", "")) for e in subscription.get("_criteria", {}).get("extension", [])
        if e.get("url") == FILTER_CRITERIA]
    for text in texts:
        resource_type, _, params = text.partition("?")
        try:
            query, _ = parse_query(resource_type, parse_qsl(params), ctx.registry)
        except FhirError:
            continue  # refused with its reason by the store's check
        for predicate in (p for clause in query.clauses for p in clause.any_of):
            named = _named(resource_type, predicate)
            if named is None:
                continue
            try:
                await crud.read(ctx, *named)
            except FhirError as refused:
                if refused.kind not in (Kind.NOT_FOUND, Kind.GONE, Kind.FORBIDDEN):
                    raise
                raise fail(Kind.INVALID, "security", f"The filter '{text}' names "
                           f"{'/'.join(named)}, which you cannot read.",
                           expression="Subscription.criteria") from None


def _named(resource_type: str, predicate: object) -> tuple[str, str] | None:
    """The one resource a filter's predicate names, if it names one."""
    if isinstance(predicate, TokenPredicate) and predicate.param == "_id" and predicate.code:
        return resource_type, predicate.code
    if isinstance(predicate, ReferencePredicate) and predicate.type and predicate.id:
        return predicate.type, predicate.id
    return None


async def create_if_subscription(ctx: Context, resource_type: str, payload: Payload) -> Version | None:
    """A create (services/context.py Creator): a Subscription, `requested`, stored with its
    owner in one unit of work; the store refuses what cannot be served (subscriptions/capture.py)."""
    if resource_type != "Subscription":
        return None
    crud.check_resource(ctx, resource_type, payload)
    check_new(payload.checked, _creator(ctx.principal))
    await _check_named(ctx, payload.checked)
    id = new_id()
    payload.checked["id"] = payload.exact["id"] = id
    for view in (payload.checked, payload.exact):
        _stamp_owner(view, ctx.principal)
    write = await crud.resource_write(ctx, "POST", resource_type, id, payload, create_only=True,
                                      validated=True)
    owner = Outbox(put=((owner_key(id), dump(owner_of(ctx.principal))),))
    [result, _] = await ctx.store.commit([write, owner])
    assert result.version is not None
    note(ctx, result.version)
    await after_commit(ctx, result.versions)
    return result.version


async def allowed(ctx: Context, events: Sequence[Event],
                  content: Content) -> list[tuple[Event, Version | None]]:
    """The events whose resource the caller of `ctx` reaches now, each with its version when
    the caller is confined (it is checked too) or `content` is full-resource."""
    kept: list[tuple[Event, Version | None]] = []
    decisions: dict[str, Decision | None] = {}
    for found in events:
        if found.resource_type not in decisions:
            try:
                decisions[found.resource_type] = decision(ctx, "read", found.resource_type)
            except FhirError:
                decisions[found.resource_type] = None
        granted = decisions[found.resource_type]
        if granted is None:
            continue
        if not granted.clauses:  # unconfined: nothing to read to decide
            kept.append((found, None))
            continue
        current = await ctx.store.read(found.resource_type, found.id)
        version = await ctx.store.vread(found.resource_type, found.id, found.version)
        if current is None or version is None or not await reachable(ctx, granted, current):
            continue
        if version.body is not None and not visible(granted, version):
            continue
        kept.append((found, version))
    if content != "full-resource":
        return kept
    return [(e, v or await ctx.store.vread(e.resource_type, e.id, e.version)) for e, v in kept]


def _bundle_of(ctx: Context, resource: dict[str, Any], kind: str, numbered: int,
               events: Sequence[tuple[Event, Version | None]], content: Content) -> dict[str, Any]:
    criteria = resource.get("criteria")
    topic = criteria if "?" not in str(criteria) else None
    return notification(ctx.base_url, resource["id"], topic, resource.get("status", ""), kind,
                        numbered, events, content)


def _status_entry(ctx: Context, resource: dict[str, Any], numbered: int) -> dict[str, Any]:
    criteria = str(resource.get("criteria"))
    parameters = status_parameters(ctx.base_url, resource["id"], criteria if "?" not in criteria else None,
                                   resource.get("status", ""), "query-status", numbered, (), "id-only")
    return {"fullUrl": f"urn:uuid:{parameters['id']}", "resource": parameters, "search": {"mode": "match"}}


def _statuses_bundle(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "id": new_id(), "type": "searchset", "total": len(entries),
            "timestamp": clock.instant(), "entry": entries}


async def status(ctx: Context, id: str) -> dict[str, Any]:
    """`Subscription/{id}/$status` (backport-subscription-status): a searchset Bundle holding
    the subscription's status as Parameters; 404 unless the caller reaches the Subscription."""
    version = await crud.read(ctx, "Subscription", id)
    resource = orjson.loads(version.body or b"{}")
    numbered = state(await one(ctx.store, state_key(id))).events
    return _statuses_bundle([_status_entry(ctx, resource, numbered)])


async def statuses(ctx: Context, ids: Sequence[str], codes: Sequence[str]) -> dict[str, Any]:
    """`Subscription/$status` (backport-subscription-status, type level): the status of each
    Subscription the caller may read (the search service's access), those among `ids` and in
    one of the `codes` when given; 400 naming the parameter for a malformed id or a code that
    is no R4 Subscription status, and when more than one page (the largest `_count`) match."""
    for id in ids:
        if not is_valid_id(id):
            raise fail(Kind.INVALID, "value", f"'{id}' is not a resource id.", expression="id")
    for code in codes:
        if code not in SUBSCRIPTION_STATUSES:
            raise fail(Kind.INVALID, "code-invalid", f"status is one of "
                       f"{', '.join(SUBSCRIPTION_STATUSES)}, not '{code}'.", expression="status")
    params = [("_count", str(ctx.max_page_size)), ("_elements", "criteria,status")]
    params += [("_id", ",".join(ids))] if ids else []
    params += [("status", ",".join(codes))] if codes else []
    found = await search.search(ctx, "Subscription", params, strict=True)
    if any(link["relation"] == "next" for link in found.get("link", ())):
        raise fail(Kind.INVALID, "too-costly", f"More than {ctx.max_page_size} Subscriptions match: "
                   "narrow the request with id or status.")
    return _statuses_bundle([
        _status_entry(ctx, e["resource"], state(await one(ctx.store, state_key(e["resource"]["id"]))).events)
        for e in found.get("entry", ()) if e["search"]["mode"] == "match"])


def _number(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    number = whole_number(value)
    if number is None:
        raise fail(Kind.INVALID, "invalid", f"{name} must be a whole number, not '{value}'.",
                   expression=name)
    return number


async def events(ctx: Context, id: str, since: str | None, until: str | None,
                 content: str | None) -> dict[str, Any]:
    """`Subscription/{id}/$events` (backport-subscription-events): the kept events from
    `eventsSinceNumber` to `eventsUntilNumber` (inclusive) as a `query-event` notification,
    those whose resource the caller no longer reaches left out; when the range reaches events
    removed after their retention, the status says so (`error`)."""
    first, last = _number("eventsSinceNumber", since), _number("eventsUntilNumber", until)
    if content is not None and content not in CONTENTS:
        raise fail(Kind.INVALID, "invalid", f"content is one of {', '.join(CONTENTS)}, not "
                   f"'{content}'.", expression="content")
    version = await crud.read(ctx, "Subscription", id)
    resource = orjson.loads(version.body or b"{}")
    numbered = state(await one(ctx.store, state_key(id))).events
    start = max(first or 1, 1)
    chosen = await kept_events(ctx.store, id, start, min(last or numbered, numbered,
                                                         start + MAX_REPLAY - 1))
    payload: Content = content or _content_of(resource)  # type: ignore[assignment]
    bundle = _bundle_of(ctx, resource, "query-event", numbered, await allowed(ctx, chosen, payload),
                        payload)
    gone = purged(await one(ctx.store, purged_key(id)))
    if start <= gone:  # the SubscriptionStatus's `error` (0..*), last of its parameters
        bundle["entry"][0]["resource"]["parameter"].append({"name": "error", "valueCodeableConcept": {
            "text": f"Events 1 to {gone} are no longer kept: delivered events are removed once "
                    "the server's retention period has passed since their write."}})
    return bundle


async def on_topic(ctx: Context, topic: str) -> list[tuple[str, dict[str, str]]]:
    """The Subscriptions served (requested or active) on `topic`, each with its filters (name:
    value), for a job that finds a topic's events itself rather than in a write."""
    query, _ = parse_query("Subscription", [("status", "requested,active"), ("criteria", topic)],
                           ctx.registry)
    return [(str(resource["id"]), {name: value for e in resource.get("_criteria", {}).get("extension", [])
                                   if e.get("url") == FILTER_CRITERIA
                                   for name, value in parse_qsl(str(e.get("valueString", "")).partition("?")[2])})
            async for resource in reach.resources(ctx, query) if resource.get("criteria") == topic]


def topic_event(subscription: str, version: Version, patients: Sequence[str]) -> tuple[str, bytes]:
    """The outbox record of an event a job found on `version` for `subscription` (as a write's
    would be: pending until the dispatcher numbers it), naming `patients`; to be committed with
    whatever the job records of having found it."""
    event = Event(version.resource_type, version.id, version.version,
                  "create" if version.version == 1 else "update", version.method,
                  version.last_updated, tuple(patients))
    return pending_key(subscription, clock.micros(clock.now())), dump(event)


def _content_of(resource: dict[str, Any]) -> str:
    for extension in resource.get("channel", {}).get("_payload", {}).get("extension", []):
        if extension.get("url", "").endswith("/backport-payload-content"):
            return str(extension.get("valueCode"))
    return "id-only"


class Desk:
    """What the dispatcher asks of the service layer, acting as the server."""

    def __init__(self, ctx: Context, record: Record, tests: Mapping[str, TopicTest],
                 stopped: Callable[[str], str | None] | None = None) -> None:
        self.ctx = dataclasses.replace(ctx, principal=server_principal("subscriptions"))
        self.record = record
        self.tests = tests
        self.stopped = stopped  # an account's state if it may not act now (auth/users.py)

    async def served(self) -> list[dict[str, Any]]:
        """Every Subscription whose status is requested or active, with its real header
        values and signing secret (stored apart, masked in the resource)."""
        query, _ = parse_query("Subscription", [("status", "requested,active")], self.ctx.registry)
        kept = {key[len(CREDENTIALS_PREFIX):]: body
                for key, body in await self.ctx.store.outbox(CREDENTIALS_PREFIX)}
        return [unmask(resource, load_credentials(kept.get(str(resource["id"]))))
                async for resource in reach.resources(self.ctx, query)]

    async def owned(self, subscription: str) -> bool:
        """Whether the subscription has a recorded owner (one created by PUT has none)."""
        return await one(self.ctx.store, owner_key(subscription)) is not None

    async def owner_stopped(self, subscription: str) -> str | None:
        """Why the subscription's owner may be sent nothing now (its user account suspended or
        closed), None if they may."""
        owner = await one(self.ctx.store, owner_key(subscription))
        if owner is None or self.stopped is None:
            return None
        kept = orjson.loads(owner)
        if kept["server"] or kept["fhir_user"] is None:  # a system client: no user account
            return None
        stopped = self.stopped(kept["subject"])
        return None if stopped is None else f"The owner's user account is {stopped}."

    async def reached(self, plan: Plan, found: Sequence[Event]) -> list[tuple[Event, Version | None]]:
        """The events whose resource the subscription's owner reaches now and that pass the
        topic's own test (none without an owner)."""
        owner = await one(self.ctx.store, owner_key(plan.id))
        if owner is None:
            return []
        try:
            principal = await _principal(self.ctx, orjson.loads(owner))
        except FhirError:
            return []
        as_owner = dataclasses.replace(self.ctx, principal=principal)
        kept = await allowed(as_owner, found, plan.content)
        test = self.tests.get(plan.topic.url) if plan.topic is not None else None
        if test is None:
            return kept
        return [(e, v) for e, v in kept if e.interaction != "delete"
                and await test(as_owner, e.id, e.patients, dict(plan.special))]

    async def set_status(self, subscription: str, to: str, why: str | None = None) -> None:
        """Move a Subscription to `to` (a new version, as the server); a concurrent change by
        its client wins, and is read again on the next round."""
        current = await self.ctx.store.read("Subscription", subscription)
        if current is None or current.body is None:
            return
        resource = orjson.loads(current.body)
        resource["status"] = to
        if why is not None:
            resource["error"] = why
        else:
            resource.pop("error", None)
        try:
            await server_writes.commit(self.ctx, [server_writes.ServerWrite(
                resource, new=False, if_match=current.version)])
        except FhirError as exc:
            if exc.kind is not Kind.PRECONDITION_FAILED:
                raise

    async def audit(self, subscription: str, endpoint: str, answered: int, kind: str,
                    sent: Sequence[tuple[Event, Version | None]]) -> None:
        """Record what a notification told a receiver."""
        patients = {patient for found, _ in sent for patient in found.patients}
        await self.record(notification_event(
            recorded=clock.instant(), subscription=f"Subscription/{subscription}",
            endpoint=endpoint, status=answered, kind=kind,
            focus=[found.reference for found, _ in sent], patients=sorted(patients)))

    def bundle(self, plan: Plan, kind: str, numbered: int,
               sent: Sequence[tuple[Event, Version | None]]) -> dict[str, Any]:
        return notification(self.ctx.base_url, plan.id, plan.topic.url if plan.topic else None,
                            plan.status, kind, numbered, sent, plan.content)
