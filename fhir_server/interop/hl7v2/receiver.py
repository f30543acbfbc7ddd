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
from itertools import accumulate
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlsplit

import orjson

from ...model.errors import FhirError, Kind
from ...services import auditing, bundle, history
from ...services.auditing import AuditRecorder
from ...services.context import Context, Payload
from ...services.principals import system_principal
from .ack import acknowledgment
from .identifiers import identifier_token, stored_with
from .inbox import APPLIED, ERROR, Inbox, Stored
from .mapping import Instance, Mappings, Rule
from . import paths
from .merge import merge_entries
from .message import CHARSETS, Message, decode, read
from .problems import Code, Location, Problem, Refused, error

log = logging.getLogger("fhir_server.hl7v2")
# What a sender may do: create, read, update and search the types the mappings write.
SCOPE = " ".join(f"system/{t}.crus" for t in ("Patient", "Encounter", "Observation", "DiagnosticReport"))
# An issue's expression in the message's Bundle: the entry, then the element of its resource
# (an extension by its URL), which the segment map says which field it came from.
_ENTRY = re.compile(r"Bundle\.entry\[(\d+)\](?:\.resource\.(\w+)(?:\('([^']*)'\))?)?")
_ERR_SEVERITY = {"warning": "W", "information": "I"}
_INTERNAL = Problem(Code.INTERNAL_ERROR, "Internal error; the message is kept for replay.")
_CONTENT_ERRORS = {Kind.INVALID: Code.DATA_TYPE, Kind.UNPROCESSABLE: Code.DATA_TYPE,
                   Kind.PRECONDITION_FAILED: Code.DUPLICATE_KEY, Kind.CONFLICT: Code.DUPLICATE_KEY}


@dataclass
class _Received:
    """A message stored and not answered yet: its inbox id, its resources or why it has none,
    and whether it was received before (the server stopped before settling it)."""

    id: int
    message: Message
    mapped: list[Instance] | Refused
    retried: bool

    def identities(self) -> set[tuple[str, str]] | None:
        """What the message writes, by type and each of its identifiers (a record created
        under one is found by another); None if it cannot be applied together with others
        (refused, retried, or a merge that reads what it writes)."""
        if isinstance(self.mapped, Refused) or self.retried:
            return None
        if any("merge_into" in i.rule for i in self.mapped):
            return None
        return {(i.resource["resourceType"], identifier_token(identifier))
                for i in self.mapped for identifier in i.resource["identifier"]}


class Receiver:
    """Receives messages for one store: `receive(raw, peer)` returns the ACK bytes."""

    def __init__(self, ctx: Context, recorder: AuditRecorder, inbox: Inbox, mappings: Mappings) -> None:
        self.ctx = ctx
        self.recorder = recorder
        self.inbox = inbox
        self.mappings = mappings
        # Messages being processed by key: the same key arriving meanwhile waits for them.
        self._running: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def receive(self, raw: bytes, peer: str | None = None) -> bytes:
        """Store, process and acknowledge one message; never raises."""
        [ack] = await self.receive_all([(raw, read(raw))], peer)
        return ack

    async def receive_all(self, frames: Sequence[tuple[bytes, Message | Refused]],
                          peer: str | None) -> list[bytes]:
        """`receive` of consecutive messages of one connection, already read
        (`message.read(raw)`), applied in order; their ACKs, in order. Messages of one sender
        that write no common resource go in one transaction (group commit); if it fails,
        each is applied alone, so a message's outcome is its own."""
        acks: list[bytes] = []
        run: list[tuple[bytes, Message]] = []
        for raw, message in frames:
            if run and (isinstance(message, Refused) or not _joins(run, message)):
                acks += await self._receive_run(run, peer)
                run = []
            if isinstance(message, Refused):
                acks.append(await self._unreadable(raw, peer, message))
            else:
                run.append((raw, message))
        if run:
            acks += await self._receive_run(run, peer)
        return acks

    async def replay(self, stored: Stored) -> bytes:
        """Process a stored message again (`fhir-server hl7 replay`)."""
        try:
            message = decode(stored.raw)
        except Refused as refused:
            return acknowledgment(None, refused.ack, refused.problems)
        return await self._process(_Received(stored.id, message, self._map(message), True),
                                   stored.peer, None)

    async def _unreadable(self, raw: bytes, peer: str | None, refused: Refused) -> bytes:
        ack = acknowledgment(None, refused.ack, refused.problems)
        try:
            stored, _ = await self.inbox.receive(None, None, raw, peer)
            await self.inbox.settle(stored.id, ERROR, ack, str(refused))
            await self.inbox.flush()
        except Exception:  # noqa: BLE001 - the sender gets its AR all the same
            log.exception("hl7v2: an unreadable message could not be kept")
        return ack

    async def _receive_run(self, run: list[tuple[bytes, Message]], peer: str | None) -> list[bytes]:
        """Messages of distinct keys: each waits for the same key arriving on another
        connection, then they are stored and processed; never raises."""
        keys = [(m.header.sender, m.header.control_id) for _, m in run]
        # The same keys on other connections first; then answered as duplicates, from the inbox.
        while running := {self._running[key] for key in keys if key in self._running}:
            await asyncio.wait(running)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._running.update((key, done) for key in keys)
        try:
            return await self._store_and_process(run, peer)
        except Exception:  # noqa: BLE001 - a bug here must not leave the sender without an answer
            log.exception("hl7v2: messages could not be processed")
            return [acknowledgment(m.header, "AE", (_INTERNAL,), CHARSETS[m.header.charset])
                    for _, m in run]
        finally:
            for key in keys:
                del self._running[key]
            done.set_result(None)

    async def _store_and_process(self, run: list[tuple[bytes, Message]], peer: str | None) -> list[bytes]:
        try:
            receipts = await self.inbox.receive_all(
                [(m.header.sender, m.header.control_id, raw, peer) for raw, m in run])
        except Exception:  # noqa: BLE001 - not stored, so not accepted: the sender resends
            if len(run) > 1:  # one of them (a resend whose row fails to open) fails alone
                return [ack for one in run for ack in await self._store_and_process([one], peer)]
            log.exception("hl7v2: messages could not be stored")
            return [acknowledgment(m.header, "AE", (Problem(
                Code.INTERNAL_ERROR, "The message could not be stored; send it again later."),),
                CHARSETS[m.header.charset]) for _, m in run]
        # The receipts reach the disk while the messages are mapped and validated; their
        # transactions commit only after that (_AfterReceipt).
        flushed = asyncio.ensure_future(self.inbox.flush())
        flushed.add_done_callback(_retrieved)  # messages refused before writing never await it
        acks: list[bytes | None] = [None] * len(run)
        together: list[_Received] = []  # applied in one transaction, in order
        positions: list[int] = []
        written: set[tuple[str, str]] = set()

        async def apply_together() -> None:
            for position, ack in zip(positions, await self._process_together(together, peer, flushed),
                                     strict=True):
                acks[position] = ack
            together.clear()
            positions.clear()
            written.clear()

        for position, ((_, message), (stored, new)) in enumerate(zip(run, receipts, strict=True)):
            if stored.ack is not None:  # a duplicate: its first answer
                acks[position] = stored.ack
                continue
            # Not new and not settled: the server stopped while processing it (or before settling).
            received = _Received(stored.id, message, self._map(message), retried=not new)
            identities = received.identities()
            if together and (identities is None or identities & written):
                await apply_together()
            if identities is None:
                acks[position] = await self._process(received, peer, flushed)
            else:
                together.append(received)
                positions.append(position)
                written.update(identities)
        if together:
            await apply_together()
        assert None not in acks
        return cast(list[bytes], acks)

    def _map(self, message: Message) -> list[Instance] | Refused:
        try:
            return self.mappings.instances(message)
        except Refused as refused:
            return refused
        except Exception:  # noqa: BLE001 - a fault of the engine: the message is kept for replay
            log.exception("hl7v2: a message could not be mapped")
            return Refused("AE", _INTERNAL)

    async def _process_together(self, group: list[_Received], peer: str | None,
                                flushed: asyncio.Future[None]) -> list[bytes]:
        """Apply `group` in one transaction and answer AA to each; if it fails, each alone."""
        if len(group) > 1:
            try:
                patients = await self._apply(group, peer, flushed)
            except Exception:  # noqa: BLE001 - one of them fails: each gets its own outcome
                pass
            else:
                acks = [acknowledgment(r.message.header, "AA", codec=CHARSETS[r.message.header.charset])
                        for r in group]
                await self._settle([(r.id, APPLIED, ack, None) for r, ack in zip(group, acks)],
                                   {r.id: written for r, written in zip(group, patients)})
                return acks
        return [await self._process(received, peer, flushed) for received in group]

    async def _process(self, received: _Received, peer: str | None,
                       flushed: asyncio.Future[None] | None) -> bytes:
        """Apply a stored message (`flushed` once its receipt is on disk, None if it was
        already) and record its outcome; an error is answered once the message kept for
        replay is on disk."""
        header = received.message.header
        codec = CHARSETS[header.charset]
        reason: str | None
        patients: list[set[str]] = []
        try:
            patients = await self._apply([received], peer, flushed)
        except Refused as refused:
            ack, state, reason = acknowledgment(header, refused.ack, refused.problems, codec), ERROR, str(refused)
        except Exception:  # noqa: BLE001 - one message's fault must not stop the listener
            log.exception("hl7v2: a message failed", extra={"message_id": received.id})
            ack, state, reason = acknowledgment(header, "AE", (_INTERNAL,), codec), ERROR, _INTERNAL.reason
        else:
            ack, state, reason = acknowledgment(header, "AA", codec=codec), APPLIED, None
        await self._settle([(received.id, state, ack, reason)], dict(zip([received.id], patients)))
        return ack

    async def _settle(self, outcomes: list[tuple[int, str, bytes, str | None]],
                      patients: dict[int, set[str]] | None = None) -> None:
        try:
            await self.inbox.settle_all(outcomes, patients)
            if any(state == ERROR for _, state, _, _ in outcomes):
                await self.inbox.flush()
        except Exception:  # noqa: BLE001 - unsettled, it is applied again (to no effect) if resent
            log.exception("hl7v2: outcomes could not be recorded",
                          extra={"message_ids": [id for id, *_ in outcomes]})

    async def _apply(self, group: list[_Received], peer: str | None,
                     flushed: asyncio.Future[None] | None) -> list[set[str]]:
        """Commit the transaction of the messages of `group` (one sender), as their sender,
        audited, not before `flushed`; the ids of the Patients each message wrote (kept with
        it, for an erasure: inbox.py). Every resource written carries its message in
        `meta.source`: a message `retried` (alone) that a version of its resources carries was
        committed before (a stop, or its outcome not recorded), and is never applied again."""
        for received in group:
            if isinstance(received.mapped, Refused):
                raise received.mapped
        sender = group[0].message.header.sender
        principal = await system_principal(self.ctx, f"mllp:{sender}", "mllp", SCOPE)
        record = auditing.begin(self.recorder, method="POST", path="", query=None, address=peer,
                                principal=lambda: principal)
        store = record.store or self.ctx.store
        ctx = dataclasses.replace(self.ctx, principal=principal, trail=record.trail,
                                  store=_AfterReceipt(store, flushed) if flushed else store)
        mapped = [cast(list[Instance], received.mapped) for received in group]
        # The entries in Bundle order: per message, its written resources, then the merged
        # records it retires.
        ordered = [i for instances in mapped for i in sorted(instances, key=lambda i: "merge_into" in i.rule)]
        status = 500
        try:
            written = (await _committed(ctx, mapped[0], source_of(group[0].message))
                       if group[0].retried else None)
            if written is not None:
                status = 200
                return [written]
            await _refuse_merged(ctx, [i for instances in mapped for i in instances])
            entries = []
            sizes = []  # each message's number of entries
            for received, instances in zip(group, mapped, strict=True):
                own = [*[_entry(i) for i in sorted(instances, key=lambda i: "merge_into" in i.rule)
                         if "merge_into" not in i.rule], *await merge_entries(ctx, instances)]
                for entry in own:
                    entry["resource"].setdefault("meta", {})["source"] = source_of(received.message)
                entries += own
                sizes.append(len(own))
            body = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            _, parsed = bundle.parse_entries(ctx, Payload(body, body))
            outcome = await bundle.transaction(ctx, parsed)
            status = 200
            ends = list(accumulate(sizes))
            return [{v.id for o in outcome.entries[end - size:end] if o.result is not None
                     for v in o.result.versions if v.resource_type == "Patient"}
                    for size, end in zip(sizes, ends, strict=True)]
        except Refused:
            status = 400
            raise
        except FhirError as exc:
            status = 500 if exc.kind is Kind.FAULT else 400
            raise _refused(exc, ordered, self.mappings) from None
        finally:
            await record.finish(status)


def _joins(run: list[tuple[bytes, Message]], message: Message) -> bool:
    """Whether `message` may be stored and processed with the `run` before it: the same
    sender (one principal), a key not in the run (a repeat is answered from the inbox)."""
    header = message.header
    return (header.sender == run[0][1].header.sender
            and all(m.header.control_id != header.control_id for _, m in run))


class _AfterReceipt:
    """The store as a message's transaction writes to it: a commit, or a unit of work,
    begins once the message's receipt is on disk. Mapping, validation and look-ups run
    meanwhile; a receipt that cannot be flushed fails the message before anything is written."""

    # Typed loosely: interop/ reaches the store only through services/ (ARCHITECTURE.md).
    def __init__(self, store: Any, flushed: asyncio.Future[None]) -> None:
        self._store = store
        self._flushed = flushed

    async def commit(self, operations: Sequence[Any]) -> list[Any]:
        await asyncio.shield(self._flushed)
        return cast(list[Any], await self._store.commit(operations))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        await asyncio.shield(self._flushed)
        async with self._store.transaction() as unit:
            yield unit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def source_of(message: Message) -> str:
    """The message as a URI for `meta.source`: sender and control id."""
    header = message.header
    return f"urn:hl7v2:{quote(header.sender, safe='')}:{quote(header.control_id, safe='')}"


async def _committed(ctx: Context, instances: list[Instance], source: str) -> set[str] | None:
    """If a resource of the message has a version written by it (in its history: a newer
    message may have updated it since): the ids of the Patients the message names as stored
    (empty if none); else None."""
    committed, patients = False, set()
    for instance in instances:
        identifier = instance.resource.get("identifier", [{}])[0]
        if not identifier.get("system"):
            continue
        for stored in await stored_with(ctx, instance.resource["resourceType"], identifier):
            committed = committed or await _written_by(ctx, stored, source)
            if stored["resourceType"] == "Patient":
                patients.add(stored["id"])
    return patients if committed else None


async def _written_by(ctx: Context, stored: dict[str, Any], source: str) -> bool:
    """Whether a version of `stored` carries `source` in `meta.source`: its history read
    through the service layer, page by page, newest first."""
    if stored.get("meta", {}).get("source") == source:
        return True
    params = [("_count", str(ctx.max_page_size))]
    while True:
        page = await history.history(ctx, stored["resourceType"], stored["id"], params,
                                     base_url="", self_url="")
        versions = orjson.loads(orjson.dumps(page.get("entry", [])))  # stored JSON as dicts
        if any(v.get("resource", {}).get("meta", {}).get("source") == source for v in versions):
            return True
        following = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
        if following is None:
            return False
        params = parse_qsl(urlsplit(following).query)


async def _refuse_merged(ctx: Context, instances: list[Instance]) -> None:
    """A patient merged away (A40) is not written to again: its record would lose its
    `replaced-by` link and be active again. The sender must name the survivor. One search
    for the patients of every message of a group."""
    named = {identifier_token(i.resource["identifier"][0]): i for i in instances
             if i.resource["resourceType"] == "Patient" and "merge_into" not in i.rule}
    if not named:
        return
    for stored in await stored_with(ctx, "Patient", *(i.resource["identifier"][0] for i in named.values())):
        survivor = next((link["other"].get("reference") for link in stored.get("link", [])
                         if link.get("type") == "replaced-by"), None)
        instance = next((named[token] for token in map(identifier_token, stored.get("identifier", []))
                         if token in named), None)
        if survivor is not None and instance is not None:
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


def _refused(exc: FhirError, instances: list[Instance], mappings: Mappings) -> Refused:
    """The service layer's refusal in HL7 terms: each issue located at the segment of the
    Bundle entry it names (the entries follow the instances), and at the field when one field
    only of its segment map writes the element; a warning stays a warning (ERR-4 W)."""
    code = _CONTENT_ERRORS.get(exc.kind, Code.INTERNAL_ERROR)
    problems = []
    for issue in exc.issues:
        location: Location | None = None
        for expression in issue.expression:
            found = _ENTRY.match(expression)
            if found and int(found[1]) < len(instances):
                instance = instances[int(found[1])]
                field = _field(mappings.segments.get(instance.rule.get("map", "")), found[2], found[3])
                location = instance.segment.location(field)
                break
        problems.append(Problem(code, issue.diagnostics, location,
                                _ERR_SEVERITY.get(issue.severity, "E")))
    return Refused("AE", *problems) if problems else Refused("AE", Problem(code, str(exc)))


def _field(segment_map: Rule | None, element: str | None, url: str | None) -> int | None:
    """The one field of `segment_map` whose target is `element` (an extension: of that URL)."""
    if segment_map is None or element is None:
        return None
    fields = set()
    for rule in segment_map["fields"]:
        if "field" not in rule:
            continue
        name, target_url, _ = paths.steps(rule["target"])[0]
        if name == element and (url is None or target_url == url):
            fields.add(rule["field"])
    return fields.pop() if len(fields) == 1 else None
