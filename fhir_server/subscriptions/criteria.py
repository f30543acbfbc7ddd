"""A Subscription resource read into what the server acts on (`Plan`), or refused.

Subscriptions R5 Backport IG 1.1.0 on R4 (StructureDefinition backport-subscription): the
topic's canonical URL in `criteria`, its filters in `criteria.extension:filterCriteria`, the
payload content (`empty`, `id-only`, `full-resource`) on `channel.payload`, the heartbeat
period, timeout and max count on `channel`. A classic R4 rest-hook names a search URL
(`Type?params`) in `criteria` instead (R4 subscription.html). Only `rest-hook` is offered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import SplitResult, parse_qsl, urlsplit

from ..model.errors import FhirError, Kind, fail
from ..model.types import is_resource_type
from ..search import Query, Registry, parse_query
from .addresses import Refused, check_host, loopback_allowed
from .credentials import signing_secret
from .topics import Topic, topics

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
PROFILE = f"{BACKPORT}/backport-subscription"
FILTER_CRITERIA = f"{BACKPORT}/backport-filter-criteria"
PAYLOAD_CONTENT = f"{BACKPORT}/backport-payload-content"
HEARTBEAT_PERIOD = f"{BACKPORT}/backport-heartbeat-period"
TIMEOUT = f"{BACKPORT}/backport-timeout"
MAX_COUNT = f"{BACKPORT}/backport-max-count"
CHANNEL_TYPE = f"{BACKPORT}/backport-channel-type"
Content = Literal["empty", "id-only", "full-resource"]
CONTENTS: tuple[Content, ...] = ("empty", "id-only", "full-resource")
MIME_TYPES = ("application/fhir+json", "application/json")
MAX_EVENTS = 100  # events in one notification when the subscription asks for no fewer
MAX_TIMEOUT = 60  # seconds a receiver may take
MAX_HEADERS, MAX_HEADER = 10, 1024  # channel headers, characters in one
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field name
VALUE = re.compile(r"[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*|")  # visible ASCII, inner spaces
# Headers that frame the request or that the sender sets (delivery.py): never the client's.
RESERVED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
    "trailer", "proxy-authorization", "proxy-connection", "content-type", "expect",
    "x-hub-signature-256"})


@dataclass(frozen=True, slots=True)
class Policy:
    """Where notifications may go: `allowed` URL prefixes (empty: any HTTPS URL); never to an
    address that is not public (addresses.py); plain HTTP only to a loopback address, and only
    with `loopback_http` (development)."""

    allowed: tuple[str, ...] = ()
    loopback_http: bool = False
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class Plan:
    """What a Subscription asks for. `topic` is None for a classic R4 subscription, whose
    `filters` hold its one criteria query."""

    id: str
    status: str
    topic: Topic | None
    resource_type: str
    filters: tuple[Query, ...]
    special: tuple[tuple[str, str], ...]  # filters no search parameter answers (SPECIAL_FILTERS)
    endpoint: str
    headers: tuple[tuple[str, str], ...] = field(repr=False)  # perhaps credentials: out of reprs
    content: Content
    mime_type: str | None
    heartbeat: int | None
    timeout: float
    max_count: int
    end: str | None
    # the HMAC key of its notifications (credentials.py), if its own; out of reprs
    secret: str | None = field(default=None, repr=False)

    @property
    def classic(self) -> bool:
        return self.topic is None


def _invalid(message: str, expression: str) -> FhirError:
    return fail(Kind.INVALID, "invalid", message, expression=expression)


def _extension(element: dict[str, Any] | None, url: str) -> list[dict[str, Any]]:
    return [e for e in (element or {}).get("extension", []) if e.get("url") == url]


def _query(text: str, registry: Registry, expression: str) -> Query:
    """A `Type?params` search URL as a Query; INVALID for an unknown type or parameter."""
    resource_type, _, params = text.partition("?")
    if not is_resource_type(resource_type) or not params:
        raise _invalid(f"'{text}' is not a search URL of the form Type?parameters.", expression)
    query, unapplied = parse_query(resource_type, parse_qsl(params, keep_blank_values=True), registry)
    if unapplied:
        raise _invalid(f"'{text}': {unapplied[0].diagnostics}", expression)
    if query.include or query.revinclude or query.sort or query.count is not None:
        raise _invalid(f"'{text}': only filters may be given, no result parameters.", expression)
    for name, _ in parse_qsl(params, keep_blank_values=True):
        if "." in name or name.startswith("_has"):
            # Matched at write time against the written resource alone (search/match.py):
            # following a reference there would make every write of the type fail.
            raise _invalid(f"'{text}': the parameter '{name}' follows references (chained "
                           "search or _has), which a subscription cannot be filtered by.", expression)
    return query


def _filters(subscription: dict[str, Any], topic: Topic, registry: Registry) -> tuple[Query, ...]:
    """The topic's filters the subscription asks for (`Type?name=value`, names the topic allows)."""
    missing = sorted((topic.filters & SPECIAL_FILTERS) - set(dict(_special(subscription))))
    if missing:
        raise _invalid(f"The topic {topic.url} needs the filter '{missing[0]}'.",
                       "Subscription.criteria.extension")
    queries = []
    for extension in _extension(subscription.get("_criteria"), FILTER_CRITERIA):
        text = str(extension.get("valueString", ""))
        resource_type, _, params = text.partition("?")
        where = "Subscription.criteria.extension"
        if resource_type != topic.resource_type:
            raise _invalid(f"The filter '{text}' is not on {topic.resource_type}, the topic's resource.", where)
        names = {name.split(":")[0] for name, _ in parse_qsl(params, keep_blank_values=True)}
        unknown = sorted(names - topic.filters)
        if unknown or not names:
            raise _invalid(f"The topic {topic.url} cannot be filtered by "
                           f"'{', '.join(unknown) or text}'; it allows: {', '.join(sorted(topic.filters))}.", where)
        if names <= SPECIAL_FILTERS:
            continue  # matched by the dispatcher, not by search (see SPECIAL_FILTERS)
        queries.append(_query(text, registry, where))
    return tuple(queries)


# Topic filters that are no search parameter: the trial-matching topic's physician.
SPECIAL_FILTERS = frozenset({"practitioner"})


def _special(subscription: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The filters search cannot apply (SPECIAL_FILTERS) the subscription gives."""
    return tuple((key, value) for extension in _extension(subscription.get("_criteria"), FILTER_CRITERIA)
                 for key, value in parse_qsl(str(extension.get("valueString", "")).partition("?")[2])
                 if key in SPECIAL_FILTERS)


def _endpoint(channel: dict[str, Any], policy: Policy) -> str:
    """The channel's endpoint, if the policy lets notifications go there."""
    endpoint = channel.get("endpoint")
    where = "Subscription.channel.endpoint"
    if not isinstance(endpoint, str) or not endpoint:
        raise _invalid("A rest-hook subscription needs channel.endpoint.", where)
    url = urlsplit(endpoint)
    if url.username or url.password or url.fragment or not url.hostname or _port(url) is None:
        raise _invalid("The endpoint must be an absolute URL without credentials or fragment.", where)
    if url.scheme != "https" and not loopback_allowed(url, policy.loopback_http):
        raise fail(Kind.INVALID, "security", "Notifications are sent over HTTPS only (plain HTTP "
                   "to a loopback address in development mode).", expression=where)
    try:
        check_host(url, policy.loopback_http)
    except Refused as refused:
        raise endpoint_refused(refused) from None
    if policy.allowed and not any(_under(url, prefix) for prefix in policy.allowed):
        raise fail(Kind.INVALID, "security", "This endpoint is not on the server's list of "
                   "allowed notification endpoints.", expression=where)
    return endpoint


def endpoint_refused(refused: Refused) -> FhirError:
    return fail(Kind.INVALID, "security", f"The endpoint's host is refused: {refused}",
                expression="Subscription.channel.endpoint")


def _under(url: SplitResult, prefix: str) -> bool:
    """Whether `url` is at or below the allowed URL `prefix`: the same scheme, host and port,
    and a path at or under the prefix's path (segment by segment, not character by character)."""
    allowed = urlsplit(prefix)
    if (url.scheme, url.hostname, _port(url)) != (allowed.scheme, allowed.hostname, _port(allowed)):
        return False
    path, base = url.path or "/", allowed.path or "/"
    return path == base or path.startswith(base if base.endswith("/") else base + "/")


def _port(url: SplitResult) -> int | None:
    try:
        return url.port or {"https": 443, "http": 80}.get(url.scheme)
    except ValueError:
        return None


def _headers(channel: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The channel's `Name: value` headers: a token name, visible ASCII values, a few short
    ones, none that frames the request or that the server sets itself."""
    where = "Subscription.channel.header"
    given = channel.get("header", [])
    if not isinstance(given, list) or len(given) > MAX_HEADERS:
        raise _invalid(f"At most {MAX_HEADERS} channel headers.", where)
    headers = []
    for header in given:
        name, colon, value = str(header).partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not TOKEN.fullmatch(name) or not VALUE.fullmatch(value) \
                or len(str(header)) > MAX_HEADER:
            # Its name only, and only a name before a colon: without one, what looks like a
            # name may be the credential itself (credentials.py).
            which = f"'{name[:40]}'" if colon and TOKEN.fullmatch(name) else f"header {len(headers) + 1}"
            raise _invalid(f"A channel header is 'Name: value' in visible ASCII, at most "
                           f"{MAX_HEADER} characters; {which} is not.", where)
        if name.lower() in RESERVED_HEADERS:
            raise _invalid(f"The channel header '{name}' is set by the server.", where)
        headers.append((name, value))
    return tuple(headers)


def _integer(channel: dict[str, Any], url: str, key: str, low: int, high: int) -> int | None:
    [*found] = _extension(channel, url)
    if not found:
        return None
    value = found[0].get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _invalid(f"{url.rsplit('/', 1)[-1]} must be a whole number from {low} to {high}.",
                       "Subscription.channel.extension")
    return value


def _content(channel: dict[str, Any], classic: bool) -> Content:
    found = _extension(channel.get("_payload"), PAYLOAD_CONTENT)
    if not found:
        return "full-resource" if classic and channel.get("payload") else "id-only"
    code = found[0].get("valueCode")
    if classic or code not in CONTENTS:
        raise _invalid(f"Unknown payload content '{code}' (empty, id-only or full-resource; "
                       "topic-based subscriptions only).", "Subscription.channel.payload.extension")
    return code  # type: ignore[return-value]


def plan(subscription: dict[str, Any], registry: Registry, policy: Policy) -> Plan:
    """The Plan of a Subscription resource; INVALID for an unknown topic, filter, channel or
    payload, and for an endpoint the policy refuses."""
    criteria = subscription.get("criteria")
    if not isinstance(criteria, str) or not criteria:
        raise _invalid("Subscription.criteria names a topic (its canonical URL) or a search URL.",
                       "Subscription.criteria")
    topic = topics().get(criteria)
    if topic is None and (criteria.startswith(("http://", "https://", "urn:")) or "?" not in criteria):
        raise fail(Kind.INVALID, "not-supported", f"Unknown SubscriptionTopic '{criteria}'; this "
                   "server's topics are listed in its CapabilityStatement.", expression="Subscription.criteria")
    channel = subscription.get("channel") or {}
    channel_type = channel.get("type")
    if channel_type != "rest-hook" or _extension(channel.get("_type"), CHANNEL_TYPE):
        raise fail(Kind.INVALID, "not-supported", f"Channel type '{channel_type}' is not offered: "
                   "only rest-hook.", expression="Subscription.channel.type")
    mime_type = channel.get("payload")
    if mime_type is not None and mime_type.split(";")[0].strip() not in MIME_TYPES:
        raise fail(Kind.INVALID, "not-supported", f"Payload type '{mime_type}' is not offered: "
                   f"{' or '.join(MIME_TYPES)}.", expression="Subscription.channel.payload")
    classic = topic is None
    filters = (_query(criteria, registry, "Subscription.criteria"),) if topic is None else \
        _filters(subscription, topic, registry)
    timeout = _integer(channel, TIMEOUT, "valueUnsignedInt", 1, MAX_TIMEOUT)
    return Plan(
        id=str(subscription.get("id", "")), status=str(subscription.get("status", "")),
        topic=topic, resource_type=topic.resource_type if topic else filters[0].resource_type or "",
        filters=filters, special=() if topic is None else _special(subscription),
        endpoint=_endpoint(channel, policy), headers=_headers(channel),
        content=_content(channel, classic), mime_type=mime_type,
        heartbeat=None if classic else _integer(channel, HEARTBEAT_PERIOD, "valueUnsignedInt", 1, 86400),
        timeout=float(timeout) if timeout is not None else policy.timeout,
        max_count=_integer(channel, MAX_COUNT, "valuePositiveInt", 1, MAX_EVENTS) or MAX_EVENTS,
        end=subscription.get("end"), secret=signing_secret(channel))


def check_new(subscription: dict[str, Any], creator: str | None) -> None:
    """A client creates a Subscription `requested` (or `off`): the server moves it on.
    `creator` is the creating user's fhirUser, None for a system client: a user's
    trial-matching subscription names themself as its physician."""
    if subscription.get("status") not in ("requested", "off"):
        raise _invalid("A new Subscription has status 'requested' (or 'off'); the server sets "
                       "it to 'active' after the handshake, or 'error'.", "Subscription.status")
    for key, value in _special(subscription):
        if key == "practitioner" and creator is not None and value != creator:
            raise fail(Kind.INVALID, "security", f"The filter practitioner={value} names another "
                       "user: a trial-matching subscription is for its creator's own patients.",
                       expression="Subscription.criteria.extension")
