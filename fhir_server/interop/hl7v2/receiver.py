"""One message from receipt to acknowledgment.

The raw bytes are stored first (inbox.py); then the message is decoded, mapped
(mapping.py) and written as ONE transaction Bundle through the service layer, acting as
the sender (a system principal named after MSH-3/MSH-4 with write scopes on the mapped
types only) and audited as a `transaction` from the peer's address. `AA` is answered only
once the transaction is committed; anything else is an `AE` or `AR` whose ERR segments say
where and why, and the message stays in the inbox for `fhir-server hl7 errors|replay`.
Each resource is written conditionally on its identifier (update, or create if none
exists), so a message applied again changes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from typing import Any
from urllib.parse import quote

from ...model.errors import FhirError, Kind
from ...services import auditing, bundle
from ...services.auditing import AuditRecorder
from ...services.context import Context, Payload
from ...services.principals import system_principal
from .ack import acknowledgment
from .identifiers import identifier_token, stored_with
from .inbox import APPLIED, ERROR, Inbox, Stored
from .mapping import Instance, Mappings
from .merge import merge_entries
from .message import CHARSETS, Message, decode, read
from .problems import Code, Location, Problem, Refused, error

log = logging.getLogger("fhir_server.hl7v2")
# What a sender may do: create, read, update and search the types the mappings write.
SCOPE = " ".join(f"system/{t}.crus" for t in ("Patient", "Encounter", "Observation", "DiagnosticReport"))
_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\]")
_INTERNAL = Problem(Code.INTERNAL_ERROR, "Internal error; the message is kept for replay.")
_CONTENT_ERRORS = {Kind.INVALID: Code.DATA_TYPE, Kind.UNPROCESSABLE: Code.DATA_TYPE,
                   Kind.PRECONDITION_FAILED: Code.DUPLICATE_KEY, Kind.CONFLICT: Code.DUPLICATE_KEY}


class Receiver:
    """Receives messages for one store: `receive(raw, peer)` returns the ACK bytes."""

    def __init__(self, ctx: Context, recorder: AuditRecorder, inbox: Inbox, mappings: Mappings) -> None:
        self.ctx = ctx
        self.recorder = recorder
        self.inbox = inbox
        self.mappings = mappings
        # Messages being processed by key: the same key arriving meanwhile waits for their ACK.
        self._running: dict[tuple[str, str], asyncio.Future[bytes]] = {}

    async def receive(self, raw: bytes, peer: str | None = None) -> bytes:
        """Store, process and acknowledge one message; never raises."""
        return await self.receive_read(raw, read(raw), peer)

    async def receive_read(self, raw: bytes, message: Message | Refused, peer: str | None) -> bytes:
        """`receive` of a message already read (`message.read(raw)`)."""
        if isinstance(message, Refused):
            return await self._unreadable(raw, peer, message)
        key = (message.header.sender, message.header.control_id)
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._running[key] = done
        try:
            ack = await self._receive(message, raw, peer)
        except Exception:  # noqa: BLE001 - a bug here must not leave the sender without an answer
            log.exception("hl7v2: a message could not be processed")
            ack = acknowledgment(message.header, "AE", (_INTERNAL,), CHARSETS[message.header.charset])
        finally:
            del self._running[key]
        done.set_result(ack)
        return ack

    async def replay(self, stored: Stored) -> bytes:
        """Process a stored message again (`fhir-server hl7 replay`)."""
        try:
            message = decode(stored.raw)
        except Refused as refused:
            return acknowledgment(None, refused.ack, refused.problems)
        return await self._process(stored.id, message, stored.peer, self._map(message), retried=True)

    async def _unreadable(self, raw: bytes, peer: str | None, refused: Refused) -> bytes:
        ack = acknowledgment(None, refused.ack, refused.problems)
        try:
            stored, _ = await self.inbox.receive(None, None, raw, peer)
            await self.inbox.settle(stored.id, ERROR, ack, str(refused))
        except Exception:  # noqa: BLE001 - the sender gets its AR all the same
            log.exception("hl7v2: an unreadable message could not be kept")
        return ack

    async def _receive(self, message: Message, raw: bytes, peer: str | None) -> bytes:
        header = message.header
        # The receipt is flushed to disk in a thread while this one maps the message; nothing
        # is written before the receipt is durable.
        receipt = asyncio.ensure_future(self.inbox.receive(header.sender, header.control_id, raw, peer))
        await asyncio.sleep(0)
        mapped = self._map(message)
        try:
            stored, new = await receipt
        except Exception:  # noqa: BLE001 - not durable, so not accepted: the sender resends
            log.exception("hl7v2: a message could not be stored")
            return acknowledgment(header, "AE", (Problem(
                Code.INTERNAL_ERROR, "The message could not be stored; send it again later."),),
                CHARSETS[header.charset])
        if stored.ack is not None:  # a duplicate: its first answer
            return stored.ack
        # Not new and not settled: the server stopped while processing it (or before settling).
        return await self._process(stored.id, message, peer, mapped, retried=not new)

    def _map(self, message: Message) -> list[Instance] | Refused:
        try:
            return self.mappings.instances(message)
        except Refused as refused:
            return refused
        except Exception:  # noqa: BLE001 - a fault of the engine: the message is kept for replay
            log.exception("hl7v2: a message could not be mapped")
            return Refused("AE", _INTERNAL)

    async def _process(self, id: int, message: Message, peer: str | None,
                       mapped: list[Instance] | Refused, *, retried: bool) -> bytes:
        header = message.header
        codec = CHARSETS[header.charset]
        reason: str | None
        try:
            if isinstance(mapped, Refused):
                raise mapped
            await self._apply(message, mapped, peer, retried)
        except Refused as refused:
            ack, state, reason = acknowledgment(header, refused.ack, refused.problems, codec), ERROR, str(refused)
        except Exception:  # noqa: BLE001 - one message's fault must not stop the listener
            log.exception("hl7v2: a message failed", extra={"message_id": id})
            ack, state, reason = acknowledgment(header, "AE", (_INTERNAL,), codec), ERROR, _INTERNAL.reason
        else:
            ack, state, reason = acknowledgment(header, "AA", codec=codec), APPLIED, None
        try:
            await self.inbox.settle(id, state, ack, reason)
        except Exception:  # noqa: BLE001 - unsettled, it is applied again (to no effect) if resent
            log.exception("hl7v2: a message's outcome could not be recorded", extra={"message_id": id})
        return ack

    async def _apply(self, message: Message, instances: list[Instance], peer: str | None,
                     retried: bool) -> None:
        """Commit the transaction of `message` (mapped to `instances`), as its sender, audited.
        Every resource written carries the message in `meta.source`: a message `retried`
        whose resources already carry it was committed before a stop, and is not applied
        again."""
        principal = await system_principal(self.ctx, f"mllp:{message.header.sender}", "mllp", SCOPE)
        record = auditing.begin(self.recorder, method="POST", path="", query=None, address=peer,
                                principal=lambda: principal)
        ctx = dataclasses.replace(self.ctx, principal=principal, trail=record.trail,
                                  store=record.store or self.ctx.store)
        # The entries in Bundle order: the written resources, then the merged records retired.
        ordered = sorted(instances, key=lambda i: "merge_into" in i.rule)
        status = 500
        try:
            source = source_of(message)
            if retried and await _committed(ctx, instances, source):
                status = 200
                return
            await _refuse_merged(ctx, instances)
            entries = [*[_entry(i) for i in ordered if "merge_into" not in i.rule],
                       *await merge_entries(ctx, instances)]
            for entry in entries:
                entry["resource"].setdefault("meta", {})["source"] = source
            body = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            _, parsed = bundle.parse_entries(ctx, Payload(body, body))
            await bundle.transaction(ctx, parsed)
            status = 200
        except Refused:
            status = 400
            raise
        except FhirError as exc:
            status = 500 if exc.kind is Kind.FAULT else 400
            raise _refused(exc, ordered) from None
        finally:
            await record.finish(status)


def source_of(message: Message) -> str:
    """The message as a URI for `meta.source`: sender and control id."""
    header = message.header
    return f"urn:hl7v2:{quote(header.sender, safe='')}:{quote(header.control_id, safe='')}"


async def _committed(ctx: Context, instances: list[Instance], source: str) -> bool:
    """Whether a resource of the message, as stored now, was last written by it."""
    for instance in instances:
        identifier = instance.resource.get("identifier", [{}])[0]
        if not identifier.get("system"):
            continue
        for stored in await stored_with(ctx, instance.resource["resourceType"], identifier):
            if stored.get("meta", {}).get("source") == source:
                return True
    return False


async def _refuse_merged(ctx: Context, instances: list[Instance]) -> None:
    """A patient merged away (A40) is not written to again: its record would lose its
    `replaced-by` link and be active again. The sender must name the survivor."""
    for instance in instances:
        if instance.resource["resourceType"] != "Patient" or "merge_into" in instance.rule:
            continue
        for stored in await stored_with(ctx, "Patient", instance.resource["identifier"][0]):
            survivor = next((link["other"].get("reference") for link in stored.get("link", [])
                             if link.get("type") == "replaced-by"), None)
            if survivor is not None:
                location = instance.segment.location(3)
                raise error(Code.UNKNOWN_KEY, f"{location} names Patient/{stored['id']}, merged "
                            f"into {survivor}: send the surviving record's identifier.", location)


def _entry(instance: Instance) -> dict[str, Any]:
    """A conditional write of the instance's resource on its first identifier."""
    resource = instance.resource
    identifier = resource["identifier"][0]
    if not identifier.get("system") or not identifier.get("value"):
        location = instance.segment.location()
        raise error(Code.REQUIRED_FIELD_MISSING, f"{location}: the identifying identifier has no "
                    "system or no value.", location)
    condition = f"identifier={quote(identifier_token(identifier), safe='')}"
    type_ = resource["resourceType"]
    if instance.rule.get("write") == "create":
        request = {"method": "POST", "url": type_, "ifNoneExist": condition}
    else:
        request = {"method": "PUT", "url": f"{type_}?{condition}"}
    return {"fullUrl": instance.full_url, "resource": resource, "request": request}


def _refused(exc: FhirError, instances: list[Instance]) -> Refused:
    """The service layer's refusal in HL7 terms: each issue located at the segment of the
    Bundle entry it names (the entries follow the instances)."""
    code = _CONTENT_ERRORS.get(exc.kind, Code.INTERNAL_ERROR)
    problems = []
    for issue in exc.issues:
        location: Location | None = None
        for expression in issue.expression:
            found = _ENTRY.match(expression)
            if found and int(found[1]) < len(instances):
                location = instances[int(found[1])].segment.location()
                break
        problems.append(Problem(code, issue.diagnostics, location))
    return Refused("AE", *problems) if problems else Refused("AE", Problem(code, str(exc)))
