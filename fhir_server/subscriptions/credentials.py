"""What a Subscription holds that only its receiver may know: the values of its
`channel.header`s (often the receiver's credentials, `Authorization: Bearer …`) and its
signing secret (extension `SECRET` on `Subscription.channel`, the HMAC key of
`X-Hub-Signature-256`).

They are never stored in the resource: each write of a Subscription stores it with every
header value and the secret replaced by `MASK`, and keeps the real ones in a sealed outbox
record of their own (records.py `credentials_key`), in the same unit of work (capture.py).
So every read path (read, vread, search, history, `_include`, export, notifications) shows the
mask, whoever asks. A write that sends the mask back keeps the value stored for that header
name (or the secret) if the endpoint is the one it was given for; a new value replaces it;
a mask with nothing stored for it, or sent to another endpoint, is refused: a value given for
one receiver is never sent to another (whoever may update the Subscription would otherwise
have it sent to an endpoint of their own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ..model.errors import FhirError, Kind, fail
from ..model.platform_codes import CANONICAL

SECRET = f"{CANONICAL}/StructureDefinition/subscription-signing-secret"
MASK = "********"
MIN_SECRET, MAX_SECRET = 32, 256  # characters of visible ASCII
HEADERS, EXTENSIONS = "Subscription.channel.header", "Subscription.channel.extension"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A Subscription's header values by name (in their order) and its signing secret, and
    the endpoint they were given for; `MASK` in a write stands for the value stored."""

    # Out of the repr, which tracebacks and log lines may show.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    secret: str | None = field(default=None, repr=False)
    endpoint: str | None = None

    def __bool__(self) -> bool:
        return bool(self.headers) or self.secret is not None


def _invalid(message: str, expression: str) -> FhirError:
    return fail(Kind.INVALID, "invalid", message, expression=expression)


def signing_secret(channel: dict[str, Any]) -> str | None:
    """The channel's signing secret as written (perhaps `MASK`), None without one."""
    found = [e for e in channel.get("extension", []) if e.get("url") == SECRET]
    if not found:
        return None
    value = found[0].get("valueString")
    if len(found) > 1 or not isinstance(value, str):
        raise _invalid(f"At most one {SECRET} extension, with a valueString.", EXTENSIONS)
    if value != MASK and not (MIN_SECRET <= len(value) <= MAX_SECRET
                              and all("\x21" <= c <= "\x7e" for c in value)):
        raise _invalid(f"The signing secret ({SECRET}) is {MIN_SECRET} to {MAX_SECRET} characters "
                       "of visible ASCII (e.g. 64 random hexadecimal digits).", EXTENSIONS)
    return value


def split(subscription: dict[str, Any]) -> tuple[dict[str, Any], Credentials]:
    """The Subscription as it is stored (header values and secret masked) and what the
    masks hide; 400 for a header name given twice or a signing secret too short or long.
    Its headers are already checked (criteria.py)."""
    channel = dict(subscription.get("channel") or {})
    headers = []
    for header in channel.get("header", []):
        name, _, value = str(header).partition(":")
        headers.append((name.strip(), value.strip()))
    names = [name.lower() for name, _ in headers]
    if len(set(names)) < len(names):
        raise _invalid("A channel header name is given twice; each is sent once.", HEADERS)
    secret = signing_secret(channel)
    if headers:
        channel["header"] = [f"{name}: {MASK}" for name, _ in headers]
    if secret is not None:
        channel["extension"] = [{"url": SECRET, "valueString": MASK} if e.get("url") == SECRET else e
                                for e in channel["extension"]]
    return {**subscription, "channel": channel}, Credentials(tuple(headers), secret, channel.get("endpoint"))


def resolve_masks(given: Credentials, stored: Credentials) -> Credentials:
    """`given` with each mask replaced by the stored value it stands for; 400 naming the
    element when nothing is stored for it, or when it was stored for another endpoint."""
    moved = stored.endpoint != given.endpoint
    kept = {} if moved else {name.lower(): value for name, value in stored.headers}
    headers = []
    for name, value in given.headers:
        if value == MASK:
            if name.lower() not in kept:
                raise _invalid(f"The channel header '{name}' is masked, but no value is stored for "
                               f"it{_FOR_ENDPOINT if moved else ''}: send its value.", HEADERS)
            value = kept[name.lower()]
        headers.append((name, value))
    secret = given.secret
    if secret == MASK:
        if stored.secret is None or moved:
            raise _invalid(f"The signing secret is masked, but none is stored"
                           f"{_FOR_ENDPOINT if moved else ''}: send its value.", EXTENSIONS)
        secret = stored.secret
    return Credentials(tuple(headers), secret, given.endpoint)


_FOR_ENDPOINT = " for this endpoint (values are never sent to another receiver)"


def unmask(subscription: dict[str, Any], credentials: Credentials) -> dict[str, Any]:
    """The stored (masked) Subscription with its real header values and secret, for the
    dispatcher only: never for a reader. Credentials given for another endpoint (read apart
    from the resource, across an update that moved it) are not joined: masks stay."""
    channel = dict(subscription.get("channel") or {})
    if credentials.endpoint != channel.get("endpoint"):
        return subscription
    if credentials.headers:
        channel["header"] = [f"{name}: {value}" for name, value in credentials.headers]
    if credentials.secret is not None:
        channel["extension"] = [{"url": SECRET, "valueString": credentials.secret}
                                if e.get("url") == SECRET else e for e in channel.get("extension", [])]
    return {**subscription, "channel": channel}


def dump(credentials: Credentials) -> bytes:
    return orjson.dumps({"headers": credentials.headers, "secret": credentials.secret,
                         "endpoint": credentials.endpoint})


def load(body: bytes | None) -> Credentials:
    if not body:
        return Credentials()
    fields = orjson.loads(body)
    return Credentials(tuple((name, value) for name, value in fields["headers"]), fields["secret"],
                       fields.get("endpoint"))
