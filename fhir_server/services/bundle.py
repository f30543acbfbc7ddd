"""batch and transaction Bundles (FHIR R4 http.html#transaction).

Entry URLs take the paths and methods the REST API takes (else 404/405, as REST answers).
A transaction runs inside one store unit of work: entries are processed DELETE, POST,
PUT/PATCH, then GET (after commit); `urn:uuid:`/`urn:oid:` and other fullUrls are rewritten to
the ids they get in every reference of the Bundle, conditional references
(`Patient?identifier=...`) must match exactly one resource, and any failure leaves no trace.
GET entries are checked before any write (URL, version, parameters, query size) and run
once on the data as they were (a failure there that the writes cannot change fails the
transaction); one that fails only when it runs after the commit (a read of a resource that
does not exist) reports its failure in its own entry.
A batch processes each entry on its own and reports each outcome, malformed entries included.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast
from urllib.parse import unquote

from ..model import jsonbody
from ..model.errors import FhirError, Issue, Kind, fail, incident
from ..model.ids import new_id
from ..model.numbers import whole_number
from ..search import Query, parse_query, query_pairs
from ..store.base import (
    RETRY_DELAYS,
    Method,
    Operation,
    OperationFailed,
    Result,
    Store,
    TransientConflict,
    UnitOfWork,
    Version,
    Write,
)
from . import crud, history, sealed, search
from .conditions import condition
from .context import Context, Payload, after_commit
from .crud import check_resource
from .guard import decision, note, with_new_records

T = TypeVar("T")
log = logging.getLogger("fhir_server.bundle")

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
JSON_PATCH = "application/json-patch+json"


@dataclass
class Entry:
    """One request entry, parsed (http.html#transaction, bundle.html#request)."""

    index: int
    method: str
    resource_type: str | None
    id: str | None
    tail: list[str]  # path segments after Type/id (e.g. ["_history", "2"])
    query: str | None
    full_url: str | None
    payload: Payload | None
    if_none_exist: str | None = None
    if_match: int | None = None
    if_none_match: str | None = None
    url: str = ""
    holders: list[dict[str, Any]] | None = None  # Reference objects of the resource, found once
    error: FhirError | None = None  # why the entry cannot run, found while parsing it

    def references(self) -> list[dict[str, Any]]:
        """The Reference objects of this entry's resource (walked on first use)."""
        if self.holders is None:
            assert self.payload is not None
            self.holders = reference_holders(self.payload.checked)
        return self.holders


@dataclass
class EntryOutcome:
    """What happened to one entry; `http` turns it into `entry.response`."""

    result: Result | None = None
    version: Version | None = None
    resource: dict[str, Any] | None = None
    error: FhirError | None = None
    not_modified: bool = False


@dataclass
class BundleOutcome:
    """Outcomes in the order of the request entries."""

    bundle_type: str
    entries: list[EntryOutcome] = field(default_factory=list)


def _entry_error(entry_index: int, error: FhirError) -> FhirError:
    """Re-anchor an error's locations in `Bundle.entry[i]`."""
    prefix = f"Bundle.entry[{entry_index}]"

    def where(expression: str) -> str:
        if expression.startswith("request."):
            return f"{prefix}.{expression}"
        if "." in expression and expression[:1].isupper():
            return f"{prefix}.resource.{expression.split('.', 1)[1]}"
        return prefix

    def anchor(issue: Issue) -> Issue:
        expressions = tuple(where(e) for e in issue.expression) or (prefix,)
        return replace(issue, expression=expressions,
                       diagnostics=f"Entry {entry_index}: {issue.diagnostics}")

    return FhirError(error.kind, tuple(anchor(i) for i in error.issues))


def _invalid(index: int, message: str, where: str = "") -> FhirError:
    return fail(Kind.INVALID, "invalid", f"Entry {index}: {message}",
                expression=f"Bundle.entry[{index}]{where}", details_code="MSG_BAD_SYNTAX")


def _parse_url(ctx: Context, method: str, url: str) -> tuple[str | None, str | None, list[str], str | None]:
    """(type, id, rest of path, query) of a request.url, relative or under our base; the
    path must be one the REST API serves for `method`: NOT_FOUND or NOT_ALLOWED as it answers."""
    if url.startswith(ctx.base_url + "/"):
        url = url[len(ctx.base_url) + 1:]
    elif "://" in url.partition("?")[0]:  # a query may hold URLs (code=http://loinc.org|...)
        raise fail(Kind.INVALID, "invalid", f"request.url '{url[:200]}' is not on this server.",
                   expression="request.url")
    path, _, query = url.partition("?")
    path = unquote(path)  # as the REST routes see a path
    parts = [p for p in path.split("/") if p]
    allowed = _methods_on(parts)
    shown = f"'{path[:200]}'" if path else "the base URL"
    if allowed is None:
        raise fail(Kind.NOT_FOUND, "not-found", f"No FHIR endpoint at {shown}.", expression="request.url")
    if ("GET" if method == "HEAD" else method) not in allowed:
        raise fail(Kind.NOT_ALLOWED, "not-supported", f"{method} is not allowed on {shown}.",
                   expression="request.url")
    resource_type = parts[0] if parts and not parts[0].startswith("_") else None
    id = parts[1] if resource_type and len(parts) > 1 and parts[1] not in ("_history", "_search") else None
    rest = parts[(resource_type is not None) + (id is not None):]
    return resource_type, id, rest, (query if "?" in url else None)


def _methods_on(parts: list[str]) -> frozenset[str] | None:
    """The methods a Bundle entry may use on a path, as the REST routes take them (None:
    no such path). `_search` takes a form body, which an entry cannot carry."""
    match parts:
        case [] | ["_history"] | [_, "_history"] | [_, _, "_history"] | [_, _, "_history", _]:
            return _READ
        case ["_search"] | [_, "_search"]:
            return frozenset()
        case [first] if not first.startswith(("_", "$")):
            return frozenset(("GET", "POST", "PUT", "PATCH", "DELETE"))
        case [first, _] if not first.startswith(("_", "$")):
            return frozenset(("GET", "PUT", "PATCH", "DELETE"))  # a malformed id: 400 as REST
        case [first, second, _] if not first.startswith(("_", "$")) and not second.startswith("_"):
            return _READ  # a compartment search, Patient/[id]/[type]
    return None


_READ = frozenset(("GET",))


def _patch_operations(index: int, resource: Any) -> Any:
    """A PATCH entry carries its JSON Patch as a Binary (http.html#patch in transactions)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary" \
            or resource.get("contentType") != JSON_PATCH:
        raise _invalid(index, f"a PATCH entry needs a Binary resource with contentType {JSON_PATCH}.",
                       ".resource")
    try:
        data = base64.b64decode(resource.get("data", ""), validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise _invalid(index, "the Binary data is not base64.", ".resource.data") from None
    try:
        return jsonbody.parse_decimal(data)
    except FhirError as exc:
        raise _entry_error(index, exc) from None


def read_bundle(ctx: Context, body: bytes, max_entries: int) -> tuple[str, list[Entry]]:
    """Parse a POSTed batch/transaction Bundle into its entries (TOO_LARGE over `max_entries`).

    Only the entries keep their resources, so each can be freed once it is stored: a 5,000-entry
    transaction stays under 10x its size in memory (tests/services/test_bundle_memory.py).
    """
    checked, exact = jsonbody.parse(body)
    if not isinstance(checked, dict):
        raise fail(Kind.INVALID, "structure", "The body must be a Bundle (a JSON object).")
    # Counted before the entries are read, so an oversized Bundle is refused as such (413).
    count = len(checked["entry"]) if isinstance(checked.get("entry"), list) else 0
    if count > max_entries:
        raise fail(Kind.TOO_LARGE, "too-costly",
                   f"The Bundle has {count} entries; the limit is {max_entries}.")
    return parse_entries(ctx, Payload(checked, exact))


def parse_entries(ctx: Context, body: Payload) -> tuple[str, list[Entry]]:
    """The Bundle type and its request entries; INVALID for anything malformed."""
    bundle = body.checked
    if bundle.get("resourceType") != "Bundle":
        raise fail(Kind.INVALID, "invalid", "POST to the base URL takes a batch or transaction Bundle.",
                   expression="resourceType")
    bundle_type = bundle.get("type")
    if bundle_type not in ("batch", "transaction"):
        raise fail(Kind.INVALID, "invalid", f"Bundle.type must be batch or transaction, not '{bundle_type}'.",
                   expression="Bundle.type")
    raw_entries = bundle.get("entry", [])
    exact_entries = body.exact.get("entry", [])
    if not isinstance(raw_entries, list):
        raise fail(Kind.INVALID, "structure", "Bundle.entry must be an array.", expression="Bundle.entry")
    entries = []
    for index, (raw, exact) in enumerate(zip(raw_entries, exact_entries, strict=True)):
        request = raw.get("request") if isinstance(raw, dict) else None
        if not isinstance(request, dict) or not request.get("method") or not request.get("url"):
            # bdl-3, an invariant of the Bundle, like bdl-7 below: the Bundle is refused.
            raise _invalid(index, "request.method and request.url are required.", ".request")
        try:
            entries.append(_parse_entry(ctx, index, request, raw, exact))
        except FhirError as exc:
            # Answered in its own entry by a batch; a transaction fails with it.
            entries.append(Entry(index, "", None, None, [], None, None, None, error=exc))
    _check_full_urls(raw_entries, entries)
    return bundle_type, entries


def _parse_entry(ctx: Context, index: int, request: dict[str, Any], raw: dict[str, Any],
                 exact: Any) -> Entry:
    """One entry; a FhirError anchored in it if it cannot run."""
    method = str(request["method"]).upper()
    if method not in _ORDER:
        raise _invalid(index, f"unsupported request.method '{method[:20]}'.", ".request.method")
    if_match = request.get("ifMatch")
    try:
        resource_type, id, tail, query = _parse_url(ctx, method, str(request["url"]))
        version = _etag_version(if_match) if if_match else None
    except FhirError as exc:
        raise _entry_error(index, exc) from None
    resource = raw.get("resource")
    payload = None
    if method in ("POST", "PUT"):
        if not isinstance(resource, dict):
            raise _invalid(index, f"a {method} entry needs a resource.", ".resource")
        payload = Payload(resource, exact["resource"])
    elif method == "PATCH":
        payload = Payload(_patch_operations(index, resource), {})
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise _invalid(index, "fullUrl must be a string.", ".fullUrl")
    return Entry(
        index, method, resource_type, id, tail, query, full_url, payload,
        if_none_exist=request.get("ifNoneExist"),
        if_match=version,
        if_none_match=request.get("ifNoneMatch"),
        url=str(request["url"]),
    )


def _check_full_urls(raw_entries: list[Any], entries: list[Entry]) -> None:
    """bdl-7: fullUrl is unique, unless the entries are different versions (bundle.html)."""
    seen: dict[tuple[str, Any], int] = {}
    for raw, e in zip(raw_entries, entries, strict=True):
        if not e.full_url:
            continue
        resource = raw.get("resource")
        meta = resource.get("meta") if isinstance(resource, dict) else None
        key = (e.full_url, meta.get("versionId") if isinstance(meta, dict) else None)
        if key in seen:
            raise _invalid(e.index, f"fullUrl '{e.full_url}' is also the fullUrl of entry {seen[key]}.",
                           ".fullUrl")
        seen[key] = e.index


def _etag_version(value: Any) -> int:
    version = whole_number(str(value).removeprefix("W/").strip('"'))
    if version is None:
        raise fail(Kind.INVALID, "value", f"ifMatch '{str(value)[:40]}' is not an ETag such as W/\"3\".",
                   expression="request.ifMatch")
    return version


# -- reference rewriting ----------------------------------------------------------------


def reference_holders(value: Any) -> list[dict[str, Any]]:
    """Every object in `value` with a string `reference` (Reference elements), found in one
    iterative walk: transactions rewrite these, and walking each resource once matters at
    thousands of resources per second."""
    found: list[dict[str, Any]] = []
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        node = pop()
        if node.__class__ is dict:
            if node.get("reference").__class__ is str:
                found.append(node)
            children = node.values()
        else:
            children = node
        for child in children:  # a plain loop: twice as fast as extend(generator) here
            kind = child.__class__
            if kind is dict or kind is list:
                push(child)
    return found


# -- transaction ------------------------------------------------------------------------


async def _match(unit: UnitOfWork | None, query: Query) -> list[str]:
    """Up to two ids matching a condition, looked up under the write lock."""
    assert unit is not None, "needs_unit() is true whenever a condition is to be looked up"
    return await unit.match_ids(query, 2)


class _Transaction:
    """State of one transaction while its unit of work is open."""

    def __init__(self, ctx: Context, entries: list[Entry]) -> None:
        self.ctx = ctx
        self.workflow_ctx = replace(ctx, store=cast(Store, _Deferred(ctx.store)))
        self.entries = entries
        self.targets: dict[str, str] = {}  # fullUrl or conditional reference -> Type/id
        self.outcomes: dict[int, EntryOutcome] = {}
        self.rewritten: list[tuple[dict[str, Any], str]] = []  # (holder, reference as sent)

    def check_identities(self, assigned: dict[int, tuple[str, bool]] | None = None) -> None:
        """Two entries may not act on the same resource (http.html#transaction).

        Checked on the ids in request.url first, then again with the ids conditional PUTs
        resolved to (`assigned`), since the spec counts resolved identities too.
        """
        seen: dict[str, int] = {}
        for e in self.entries:
            id = e.id
            if id is None and e.method == "PUT" and assigned is not None:
                id = assigned[e.index][0]
            if e.method in ("PUT", "PATCH", "DELETE") and id:
                key = f"{e.resource_type}/{id}"
                if key in seen:
                    raise _invalid(e.index, f"{key} is also the subject of entry {seen[key]}.",
                                   ".request.url")
                seen[key] = e.index

    def needs_unit(self) -> bool:
        """Whether the writes need a unit of work: something to look up under the write lock
        (a deletion, conditional create or update, conditional reference), or more
        operations than one trip to the store takes."""
        # Only POST and PUT entries name targets (assign_ids): a conditional reference equal
        # to another entry's fullUrl still needs its lookup.
        full_urls = {e.full_url for e in self.entries if e.full_url and e.method in ("POST", "PUT")}
        for e in self.entries:
            if e.method == "DELETE" or e.if_none_exist or (e.method == "PUT" and e.id is None):
                return True
            if e.payload is not None and e.method != "PATCH" and any(
                    "?" in h["reference"] and h["reference"] not in full_urls for h in e.references()):
                return True
        return len(self.entries) > _Pending.CHUNK

    async def assign_ids(self, unit: UnitOfWork | None) -> dict[int, tuple[str, bool]]:
        """The id each POST/PUT entry writes, and whether a conditional create matched."""
        assigned: dict[int, tuple[str, bool]] = {}
        for e in sorted(self.entries, key=lambda e: _ORDER[e.method]):
            if e.method in ("POST", "PUT"):
                try:
                    assigned[e.index] = await self._assign_id(unit, e)
                except FhirError as exc:
                    raise _entry_error(e.index, exc) from None
                if e.full_url:
                    self.targets[e.full_url] = f"{e.resource_type}/{assigned[e.index][0]}"
        return assigned

    async def _assign_id(self, unit: UnitOfWork | None, e: Entry) -> tuple[str, bool]:
        if e.method == "POST":
            assert e.resource_type is not None
            id, matched = new_id(), False
            if e.if_none_exist:
                query = decision(self.ctx, "create", e.resource_type).confine(
                    condition(self.ctx, e.resource_type, e.if_none_exist))
                found = await _match(unit, query)
                if len(found) > 1:
                    raise fail(Kind.PRECONDITION_FAILED, "multiple-matches",
                               f"ifNoneExist matches more than one {e.resource_type}.")
                if found:
                    id, matched = found[0], True
            return id, matched
        assert e.resource_type is not None and e.payload is not None
        if e.id is not None:
            return e.id, False
        query = decision(self.ctx, "update", e.resource_type).confine(
            condition(self.ctx, e.resource_type, e.query or ""))
        found = await _match(unit, query)
        if len(found) > 1:
            raise fail(Kind.PRECONDITION_FAILED, "multiple-matches",
                       f"The criteria match more than one {e.resource_type}.")
        body_id = e.payload.checked.get("id")
        if body_id is not None:
            crud.check_id(str(body_id))
        if found and body_id is not None and body_id != found[0]:
            raise fail(Kind.INVALID, "invalid", "The resource id differs from the id of the match.",
                       expression=f"{e.resource_type}.id", details_code="MSG_RESOURCE_ID_MISMATCH")
        return (found[0] if found else str(body_id or new_id())), False

    async def resolve_conditional_references(self, unit: UnitOfWork | None) -> None:
        """Map each `Type?query` reference to the one resource it matches (else fail).

        A `urn:uuid:`/`urn:oid:` reference that names no entry fails too: stored as is, it
        would point nowhere (bundle.html#references).
        """
        for e in self.entries:
            if e.payload is None or e.method == "PATCH":
                continue
            for reference in {h["reference"] for h in e.references()}:
                if reference in self.targets:
                    continue
                if reference.startswith(("urn:uuid:", "urn:oid:")):
                    raise fail(Kind.INVALID, "not-found",
                               f"Entry {e.index}: the reference '{reference}' is the fullUrl of no "
                               "entry of this Bundle.", expression=f"Bundle.entry[{e.index}].resource")
                if "?" not in reference:
                    continue
                rtype, _, criteria = reference.partition("?")
                try:
                    crud.check_type(rtype)
                    query = decision(self.ctx, "search", rtype).confine(
                        condition(self.ctx, rtype, criteria))
                    found = await _match(unit, query)
                except FhirError as exc:
                    raise _entry_error(e.index, exc) from None
                if len(found) != 1:
                    raise fail(
                        Kind.PRECONDITION_FAILED, "not-found" if not found else "multiple-matches",
                        f"Entry {e.index}: the conditional reference '{reference}' matches "
                        f"{'no' if not found else 'more than one'} resource.",
                        expression=f"Bundle.entry[{e.index}].resource",
                    )
                self.targets[reference] = f"{rtype}/{found[0]}"

    def rewrite(self, e: Entry) -> None:
        """Point the entry's references at the ids the transaction gave their targets."""
        assert e.payload is not None
        holders = e.references()
        if e.payload.exact is not e.payload.checked:
            holders = holders + reference_holders(e.payload.exact)
        for holder in holders:
            target = self.targets.get(holder["reference"])
            if target is not None:
                self.rewritten.append((holder, holder["reference"]))
                holder["reference"] = target

    def undo(self) -> None:
        """Restore the references as sent, for another attempt after a lost race."""
        for holder, sent in reversed(self.rewritten):
            holder["reference"] = sent
        self.rewritten.clear()


async def transaction(ctx: Context, entries: list[Entry]) -> BundleOutcome:
    """Run a transaction: all entries or none (http.html#transaction)."""
    for e in entries:
        if e.error is not None:
            raise e.error
    tx = _Transaction(ctx, entries)
    tx.check_identities()
    for e in entries:  # validate before taking the write lock: it is the costly part
        if e.payload is not None and e.method != "PATCH":
            try:
                assert e.resource_type is not None
                crud.check_type(e.resource_type)
                check_resource(ctx, e.resource_type, e.payload)
            except FhirError as exc:
                raise _entry_error(e.index, exc) from None
    reads = [e for e in entries if _ORDER[e.method] == 3]
    for e in reads:
        _check_read(ctx, e)
    for e in reads:
        await _rehearse(ctx, e)
    for delay in RETRY_DELAYS:
        await asyncio.sleep(delay)
        try:
            await _apply_writes(ctx, tx)
            break
        except TransientConflict:
            # Lost a race with a concurrent unit (MongoDB): nothing of this one is stored.
            tx.undo()
            tx = _Transaction(ctx, entries)
    else:
        raise fail(Kind.BUSY, "transient", "Too many concurrent writes to the same resources; "
                   "retry the transaction later.")
    written = [version for outcome in tx.outcomes.values()
               for version in (outcome.result.versions if outcome.result else ())]
    for version in written:
        note(ctx, version)
    await after_commit(ctx, written)
    # GETs see the committed writes, so they run after the commit. All that can be checked
    # without the stored data was checked before any write (_check_read); a GET that fails
    # now (a read of a resource that does not exist) cannot undo the writes, so it is
    # reported in its own entry: an error response would hide a durable transaction.
    for e in reads:
        try:
            tx.outcomes[e.index] = await _read(ctx, e)
        except FhirError as exc:
            tx.outcomes[e.index] = EntryOutcome(error=_entry_error(e.index, exc))
        except Exception:  # noqa: BLE001 - the writes are durable: say so, with this fault
            tx.outcomes[e.index] = EntryOutcome(error=incident(log))
    return BundleOutcome("transaction-response", [tx.outcomes[e.index] for e in entries])


async def _apply_writes(ctx: Context, tx: _Transaction) -> None:
    """The writes of a transaction, in one unit of work, in the order http.html prescribes.

    Each entry is checked and turned into a store operation before the operations go to the
    store together: a trip per entry would let the event loop serve other requests between
    two writes while this transaction holds the store's write lock. When nothing needs
    looking up under that lock (no deletion, conditional operation or conditional
    reference) and the operations fit in one chunk, they are checked before the lock is
    taken and sent in one commit; otherwise a unit of work takes them a chunk at a time.
    """
    entries = sorted(tx.entries, key=lambda e: _ORDER[e.method])
    # A store without transactions (standalone MongoDB) refuses the unit: no Bundle slips
    # through as a plain commit.
    if not tx.needs_unit() and ctx.store.status()["transactions"]:
        try:
            assigned = await tx.assign_ids(None)
            await tx.resolve_conditional_references(None)
            await _plan_writes(ctx, tx, entries, assigned, _Pending(ctx.store.commit, tx))
            return
        except _NeedsUnit:  # a workflow took an entry: its writes must join a unit of work
            tx.undo()
            tx.outcomes.clear()
    async with ctx.store.transaction() as unit:
        tx.workflow_ctx = replace(ctx, store=cast(Store, _Joined(ctx.store, unit)))
        pending = _Pending(unit.apply, tx)
        for e in entries:
            if e.method == "DELETE":
                await pending.add(e, await _guard(e, _delete(ctx, e)))
        await pending.flush()  # conditions below see the deletions
        assigned = await tx.assign_ids(unit)
        tx.check_identities(assigned)
        await tx.resolve_conditional_references(unit)
        await _plan_writes(ctx, tx, entries, assigned, pending)


async def _plan_writes(ctx: Context, tx: _Transaction, entries: list[Entry],
                       assigned: dict[int, tuple[str, bool]], pending: _Pending) -> None:
    """Check the POST, PUT and PATCH entries and send their writes through `pending`."""
    ctx = _with_new_patients(ctx, tx, assigned)
    tx.workflow_ctx = _with_new_patients(tx.workflow_ctx, tx, assigned)  # creators see them too
    documents = {f"{e.resource_type}/{assigned[e.index][0]}": e.payload.checked for e in entries
                 if e.method in ("POST", "PUT") and e.payload and e.resource_type in sealed.DOCUMENT_TYPES}
    with sealed.alongside(documents):  # a message checks the sealed documents it comes with
        for e in entries:
            if e.method in ("POST", "PUT"):
                await pending.add(e, await _guard(e, _write(ctx, tx, e, assigned[e.index])))
            elif e.method == "PATCH":
                await pending.add(e, await _guard(e, _patch(ctx, e)))
        await pending.flush()


class _NeedsUnit(Exception):
    """A workflow wants to write while the transaction has no unit of work open."""


class _Deferred:
    """The store as a workflow sees it in a transaction without a unit of work (the fast
    path): it may read; a write sends the transaction to the unit-of-work path."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def commit(self, operations: Sequence[Operation]) -> list[Result]:
        raise _NeedsUnit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _Joined(_Deferred):
    """The store as a workflow sees it inside a transaction's unit of work: its writes join
    the unit, all or nothing with the Bundle's."""

    def __init__(self, store: Store, unit: UnitOfWork) -> None:
        super().__init__(store)
        self._unit = unit

    async def commit(self, operations: Sequence[Operation]) -> list[Result]:
        return await self._unit.apply(operations)


class _Pending:
    """Operations of a transaction's entries not yet sent to the store."""

    CHUNK = 256  # operations per trip: few trips, and big transactions release parsed entries

    def __init__(self, send: Callable[[list[Operation]], Awaitable[list[Result]]], tx: _Transaction) -> None:
        self.send = send
        self.tx = tx
        self.operations: list[tuple[Entry, Operation]] = []

    async def add(self, e: Entry, planned: Operation | EntryOutcome) -> None:
        """Queue the entry's operation, or record its outcome if it needs none."""
        if isinstance(planned, EntryOutcome):
            self.tx.outcomes[e.index] = planned
            return
        self.operations.append((e, planned))
        if len(self.operations) >= self.CHUNK:
            await self.flush()

    async def flush(self) -> None:
        """Send the queued operations; a failure names its entry."""
        if not self.operations:
            return
        try:
            results = await self.send([op for _, op in self.operations])
        except OperationFailed as failed:
            e, op = self.operations[failed.index]
            raise _entry_error(e.index, _write_error(op, failed)) from None
        for (e, _), result in zip(self.operations, results, strict=True):
            self.tx.outcomes[e.index] = EntryOutcome(result=result)
            e.payload = None  # stored: let the parsed resource go, large transactions hold only bytes
        self.operations.clear()


def _write_error(op: Operation, error: FhirError) -> FhirError:
    """ifNoneMatch "*" on an existing resource is a failed precondition (412), as for HTTP's
    If-None-Match, not the conflict a create-only write reports."""
    if isinstance(op, Write) and op.method == "PUT" and op.create_only and error.kind is Kind.CONFLICT:
        return fail(Kind.PRECONDITION_FAILED, "conflict",
                    f"{op.resource_type}/{op.id} exists and ifNoneMatch is '*'.")
    return error


def _with_new_patients(ctx: Context, tx: _Transaction, assigned: dict[int, tuple[str, bool]]) -> Context:
    """A practitioner reaches the patients this transaction creates with their Consent."""
    created = {f"Patient/{assigned[e.index][0]}" for e in tx.entries
               if e.method == "POST" and e.resource_type == "Patient" and not assigned[e.index][1]}
    consents = []
    for e in tx.entries:
        if e.resource_type == "Consent" and e.method in ("POST", "PUT") and e.payload is not None:
            sent = (e.payload.checked.get("patient") or {}).get("reference", "")
            consents.append((tx.targets.get(sent, sent), e.payload.checked))
    return with_new_records(ctx, consents, created) if created and consents else ctx


def _check_read(ctx: Context, e: Entry) -> None:
    """Fail a transaction before any write for a GET entry that cannot succeed whatever the
    writes do: an unknown type, a malformed id, version or history parameter, a query past
    the size limits (search/parse.py)."""
    try:
        if e.resource_type is not None:
            crud.check_type(e.resource_type)
        if e.id is not None:
            crud.check_id(e.id)
        params = _params(e)
        match e.tail:
            case ["_history"]:
                history.parameters(ctx, e.resource_type, e.id, params)
            case ["_history", version_id] if whole_number(version_id) is None:
                raise fail(Kind.NOT_FOUND, "not-found", f"Version '{version_id[:40]}' does not exist.",
                           details_code="MSG_VERSION_NOT_FOUND")
            case [compartment_type]:
                _check_compartment(e)
                parse_query(compartment_type, params, ctx.registry, base=ctx.base_url)
            case [] if e.id is None:
                parse_query(e.resource_type, params, ctx.registry, base=ctx.base_url)
    except FhirError as exc:
        raise _entry_error(e.index, exc) from None


async def _rehearse(ctx: Context, e: Entry) -> None:
    """Run a GET entry once on the data as they are before the writes, unrecorded: a failure
    that the writes cannot change (anything but the resource read being absent or deleted),
    or an unexpected fault, fails the transaction before anything is stored."""
    try:
        await _read(replace(ctx, trail=None), e)
    except FhirError as exc:
        if exc.kind not in (Kind.NOT_FOUND, Kind.GONE):
            raise _entry_error(e.index, exc) from None


def _params(e: Entry) -> list[tuple[str, str]]:
    return query_pairs(e.query or "")


def _check_compartment(e: Entry) -> str:
    """The type searched in a compartment (`Patient/[id]/[type]`), as the REST route checks it."""
    [compartment_type] = e.tail
    if e.resource_type != "Patient":
        raise fail(Kind.NOT_SUPPORTED, "not-supported",
                   "Only the Patient compartment can be searched (compartmentdefinition-patient).")
    crud.check_type(compartment_type)
    return compartment_type


async def _guard(e: Entry, work: Awaitable[T]) -> T:
    try:
        return await work
    except FhirError as exc:
        raise _entry_error(e.index, exc) from None


async def _delete(ctx: Context, e: Entry) -> Operation | EntryOutcome:
    assert e.resource_type is not None
    operation = await crud.delete_operation(ctx, e.resource_type, e.id, e.query or "",
                                            if_match=e.if_match)
    return EntryOutcome(result=Result("none")) if operation is None else operation


async def _write(ctx: Context, tx: _Transaction, e: Entry, assigned: tuple[str, bool]) -> Write | EntryOutcome:
    """A POST or PUT entry's write, built as REST builds it (crud.resource_write); a POST
    may be taken by a workflow instead, as crud.create lets it, its writes joining the
    transaction's."""
    assert e.payload is not None and e.resource_type is not None
    id, matched = assigned
    chosen = e.id is not None or e.payload.checked.get("id") is not None  # not server-assigned
    if matched:
        existing = await ctx.store.read(e.resource_type, id)
        return EntryOutcome(result=Result("matched", (existing,) if existing else ()))
    if e.method == "PUT" and e.id is not None:
        crud.check_id(e.id)
        crud.check_body_id(e.resource_type, e.id, e.payload)
    e.payload.checked["id"] = id
    e.payload.exact["id"] = id
    tx.rewrite(e)
    if e.method == "POST":
        taken = await crud.taken_by_workflow(tx.workflow_ctx, e.resource_type, e.payload)
        if taken is not None:
            return EntryOutcome(result=Result("created", (taken,)))
    method: Method = "POST" if e.method == "POST" else "PUT"
    return await crud.resource_write(
        ctx, method, e.resource_type, id, e.payload, if_match=e.if_match,
        create_only=e.method == "POST" or e.if_none_match == "*",
        replacing=e.method == "PUT" and chosen, validated=True)


async def _patch(ctx: Context, e: Entry) -> Write:
    assert e.payload is not None and e.resource_type is not None
    if e.id is None:
        raise fail(Kind.NOT_SUPPORTED, "not-supported", "Conditional PATCH is not supported in a Bundle.")
    return await crud.patch_write(ctx, e.resource_type, e.id, e.payload.checked, if_match=e.if_match)


async def _read(ctx: Context, e: Entry) -> EntryOutcome:
    """A GET entry: read, vread, search or history, as the URL says (its shape was checked
    by _parse_url)."""
    params = _params(e)
    if e.tail == ["_history"]:
        path = "/".join(p for p in (e.resource_type, e.id, "_history") if p)
        return EntryOutcome(resource=await history.history(
            ctx, e.resource_type, e.id, params, base_url=ctx.base_url, self_url=f"{ctx.base_url}/{path}"))
    if e.id is None:
        return EntryOutcome(resource=await search.search(ctx, e.resource_type, params, strict=False))
    assert e.resource_type is not None
    if len(e.tail) == 2:
        return EntryOutcome(version=await crud.vread(ctx, e.resource_type, e.id, e.tail[1]))
    if len(e.tail) == 1:
        return EntryOutcome(resource=await search.search(ctx, _check_compartment(e), params,
                                                         strict=False, compartment=e.id))
    version = await crud.read(ctx, e.resource_type, e.id)
    if e.if_none_match and e.if_none_match.strip() in (f'W/"{version.version}"', f'"{version.version}"'):
        return EntryOutcome(version=version, not_modified=True)
    return EntryOutcome(version=version)


# -- batch ------------------------------------------------------------------------------


async def batch(ctx: Context, entries: list[Entry]) -> BundleOutcome:
    """Run each entry on its own; a failure is that entry's outcome (http.html#transaction)."""
    outcomes = []
    for e in entries:
        try:
            outcomes.append(await _batch_entry(ctx, e))
        except FhirError as exc:
            outcomes.append(EntryOutcome(error=exc))
        except Exception:  # noqa: BLE001 - a fault is that entry's answer: the others stand
            outcomes.append(EntryOutcome(error=incident(log)))
    return BundleOutcome("batch-response", outcomes)


async def _batch_entry(ctx: Context, e: Entry) -> EntryOutcome:
    if e.error is not None:
        raise e.error
    if e.method in ("GET", "HEAD"):
        return await _read(ctx, e)
    if e.resource_type is None:
        raise fail(Kind.INVALID, "invalid", "request.url must name a resource type.")
    crud.check_type(e.resource_type)
    if e.method == "DELETE":
        if e.id is None:
            return EntryOutcome(result=await crud.conditional_delete(ctx, e.resource_type, e.query or "",
                                                                     multiple=False))
        return EntryOutcome(result=await crud.delete(ctx, e.resource_type, e.id, if_match=e.if_match))
    assert e.payload is not None
    if e.method == "POST":
        return EntryOutcome(result=await crud.create(ctx, e.resource_type, e.payload,
                                                     if_none_exist=e.if_none_exist))
    if e.method == "PATCH":
        if e.id is None:
            return EntryOutcome(result=await crud.conditional_patch(
                ctx, e.resource_type, e.query or "", e.payload.checked, if_match=e.if_match))
        return EntryOutcome(result=await crud.patch(ctx, e.resource_type, e.id, e.payload.checked,
                                                    if_match=e.if_match))
    if e.if_none_match is not None:
        # crud.update has no create-only form; a one-entry transaction gives ifNoneMatch its meaning.
        return (await transaction(ctx, [e])).entries[0]
    if e.id is None:
        return EntryOutcome(result=await crud.conditional_update(
            ctx, e.resource_type, e.query or "", e.payload, if_match=e.if_match))
    return EntryOutcome(result=await crud.update(ctx, e.resource_type, e.id, e.payload, if_match=e.if_match))
