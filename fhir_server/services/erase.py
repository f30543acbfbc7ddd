"""Patient/[id]/$erase (R6 calls it `$purge`): the right to erasure (GDPR art. 17).

Removes the patient's compartment from the store, every version and index entry of every
resource in it (store/erasure.py says how deleted resources are found), destroys the
patient's data keys so that every other copy of their ciphertext (audit details, backups)
can no longer be read, and records the erasure in the erasure ledger kept with the key ring
(crypto/ledger.py), which `fhir-server restore` replays. AuditEvents are not erased: the hash
chain covers them, and their personal details shred with the key. The erasure leaves an
AuditEvent of its own: who, when, why, how many resources and versions of each type.
The register of disclosures to authorities outlives it, without naming the patient
(kept_registers.py).

Who may erase: an administrator, the server itself (the command line, `auth=off`), the
patient, with their own token (fhirUser `Patient/<id>`), and their legal representative (the
patient in context). Anyone else gets 403; a patient or representative naming another
patient gets 404, as for an id nobody has. A configured legal hold (a retention
policy's, `LegalHold`) refuses with 409, or, where the policy offers it (`Erasures.instead`:
privacy/retention_holds.py), has the record pseudonymised instead, and the answer says why. Erasing again sweeps the compartment again: what was
written there since is erased as a new erasure; if nothing was, it answers what the last did.
docs/backup-and-erasure.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

import orjson

from .. import clock
from ..access import Principal, Role, compartment_clause, server_principal
from ..audit.events import erasure_event
from ..crypto import ErasureLedger, UnreadableBody, patient_scope
from ..model.errors import FhirError, Issue, Kind, fail
from ..model.ids import new_id
from ..search import Query, Registry
from ..store.base import Erase, Erasure, Outbox, Store
from ..subscriptions import forget_events, one
from . import export, kept_registers, notifications
from .context import Context
from .crud import check_id
from .study_access import FIGURES_ERASED, FIGURES_PREFIX

# Never erased (see the module docstring).
KEPT_TYPES = frozenset({"AuditEvent"})
MAX_REASON = 500  # characters
KEPT_JOBS = 100  # finished background jobs remembered in memory (then: their notes)
# Notes of background jobs, in the store's outbox, which every worker reads (and seals)
JOB_PREFIX = "erase-job/"
KEPT_JOB_SECONDS = 7 * 86_400  # how long a job's note is kept (then: the ledger)
log = logging.getLogger(__name__)


class LegalHold(Protocol):
    """A retention policy's legal holds: why a patient's data must be kept, or None."""

    async def held(self, patient_id: str) -> str | None: ...


# Instead of erasing a held record (ctx, patient id, reason, the hold): the operation's output.
Instead = Callable[[Context, str, str, str], Awaitable[dict[str, Any]]]
# Run by a requested erasure (ctx, patient id), before it is settled: copies kept outside the
# store's resources (the retention's archived reports) go too.
Forget = Callable[[Context, str], Awaitable[None]]


class KeyShredder(Protocol):
    """The data keys (crypto/datakeys.py `DataKeys`): the ids of a scope's keys, and their
    destruction (how many were destroyed)."""

    def keys_of(self, scope: str, retired: bool = False) -> list[bytes]: ...

    def destroy(self, scope: str) -> int: ...


@dataclass
class Job:
    """An erasure running in the background (`Prefer: respond-async`), and who asked (`_owner`)."""

    owner: str
    task: asyncio.Task[dict[str, Any]]


@dataclass
class Erasures:
    """What erasure needs beside the store: the ledger, the data keys (None: encryption
    off, no key to destroy), the audit recorder's `record`, the legal holds if any are
    configured (with what to do instead, if anything), and the background jobs of this process."""

    ledger: ErasureLedger
    keys: KeyShredder | None
    record: Callable[[dict[str, Any]], Awaitable[str]]
    hold: LegalHold | None = None
    instead: Instead | None = None
    forget: Forget | None = None
    # Wipes what the HL7 v2 inbox keeps of the messages that wrote a patient (interop/hl7v2)
    messages: Callable[[str], Awaitable[int]] | None = None
    jobs: dict[str, Job] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def compartment(registry: Registry, patient_id: str) -> list[Query]:
    """One query per type of Patient/`patient_id`'s compartment (compartmentdefinition-patient),
    the Patient itself included, the Patients its `link` names and AuditEvents not."""
    queries = []
    for resource_type in sorted(registry.resource_types):
        if resource_type in KEPT_TYPES:
            continue
        clause = compartment_clause(registry, resource_type, patient_id, links=False)
        if clause is not None:
            queries.append(Query(resource_type, (clause,)))
    return queries


def _setup(ctx: Context) -> Erasures:
    if ctx.erasures is None:
        raise fail(Kind.NOT_SUPPORTED, "not-supported", "Erasure is not configured on this server.")
    return ctx.erasures


def _check_caller(principal: Principal | None, patient_id: str) -> None:
    """FORBIDDEN unless an administrator, the server, or the patient themselves; NOT_FOUND
    for a patient naming another (no existence oracle)."""
    if principal is None:
        raise fail(Kind.FORBIDDEN, "forbidden", "No authenticated caller.")
    if principal.server or principal.admin:
        return
    if principal.role is Role.PATIENT:
        if principal.fhir_user == f"Patient/{patient_id}" and principal.patient == patient_id:
            return
        raise _unknown(patient_id)
    if principal.role is Role.REPRESENTATIVE and principal.patient is not None:
        # a representation in force (checked when the principal is made; a former one: 403)
        if principal.patient == patient_id:
            return
        raise _unknown(patient_id)
    raise fail(Kind.FORBIDDEN, "forbidden", "Only a platform administrator, the patient "
               "themselves (signed in as the patient) or their legal representative may erase a "
               "patient's record.")


def _unknown(patient_id: str) -> Exception:
    return fail(Kind.NOT_FOUND, "not-found", f"Patient/{patient_id} is not known.",
                details_code="MSG_NO_EXIST")


def check_reason(reason: str | None) -> str:
    """The stated reason, stripped; INVALID if missing or longer than MAX_REASON."""
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON:
        raise fail(Kind.INVALID, "required", f"$erase needs a reason of 1 to {MAX_REASON} "
                   "characters (parameter `reason`); it is kept in the erasure ledger and the "
                   "audit trail, so it should name no personal data.", expression="reason")
    return reason


async def begin(ctx: Context, patient_id: str, reason: str | None) -> str:
    """Check an erasure request; its reason. FORBIDDEN, NOT_FOUND (a patient the store does not
    hold and no erasure of theirs), INVALID or CONFLICT (a legal hold) otherwise; nothing is
    changed."""
    check_id(patient_id)
    setup = _setup(ctx)
    _check_caller(ctx.principal, patient_id)
    reason = check_reason(reason)
    erased_before = await asyncio.to_thread(setup.ledger.find, patient_id) is not None
    if not erased_before and await ctx.store.read("Patient", patient_id) is None:
        raise _unknown(patient_id)
    if setup.hold is not None and setup.instead is None and (why := await setup.hold.held(patient_id)):
        raise fail(Kind.CONFLICT, "business-rule", f"Patient/{patient_id} is under a legal "
                   f"hold and cannot be erased: {why}")
    return reason


async def erase(ctx: Context, patient_id: str, reason: str, *, address: str | None = None,
                job: str | None = None) -> dict[str, Any]:
    """Erase Patient/`patient_id` (after `begin`), or do what the policy does instead for a
    record under a legal hold; the operation's output Parameters."""
    setup = _setup(ctx)
    if setup.hold is not None and setup.instead is not None and (
            why := await setup.hold.held(patient_id)):
        return await setup.instead(ctx, patient_id, reason, why)
    return await sweep(ctx, patient_id, reason, address=address, job=job, requested=True)


async def sweep(ctx: Context, patient_id: str, reason: str, *, address: str | None = None,
                job: str | None = None, requested: bool = False,
                unless_updated_since: datetime | None = None,
                checkpoint: bool = True) -> dict[str, Any]:
    """Erase Patient/`patient_id`, holds aside: store, data keys, ledger, AuditEvent; the
    operation's output Parameters. Every request sweeps the compartment: running it again
    finishes an erasure cut short, and erases what was written there since (an id reused by
    a new Patient, a late result) as a new erasure; when it finds nothing, it answers what
    the last erasure did. The erasure is announced in the ledger's intents first and settled
    last, so that a process killed in between has it finished at the next start
    (`reconcile`). A `requested` erasure (not the retention's own) forgets the copies
    `Erasures.forget` names too.

    Conditional (`unless_updated_since`, kept in the intent so that `reconcile` finishes it
    on the same condition): CONFLICT if the store refuses it (`Store.erase`: a resource of
    the compartment was written at that instant or later), and then nothing else is done
    either: no key destroyed, no event or copy forgotten, the intent withdrawn.

    `checkpoint` False (the retention run's archives, inside `Store.checkpoints_deferred`):
    the store's write-ahead log, which may still hold the erased rows, is emptied by the
    caller's next `Store.checkpoint`, not at once."""
    setup = _setup(ctx)
    async with _exclusive(setup):  # two requests for one patient: the second finds nothing left
        return await _swept(ctx, setup, patient_id, reason, address=address, job=job,
                            requested=requested, unless_updated_since=unless_updated_since,
                            checkpoint=checkpoint)


@asynccontextmanager
async def held_off(ledger: ErasureLedger | None) -> AsyncIterator[None]:
    """No erasure on `ledger` runs, in any process, while this is held: for a write about a
    patient that an erasure running beside it would remove uncopied (a disclosure registered:
    kept_registers.py). Without a ledger nothing is erased."""
    if ledger is None:
        yield
        return
    held = ledger.exclusive()
    await asyncio.to_thread(held.__enter__)  # waits while an erasure runs
    try:
        yield
    finally:
        held.__exit__(None, None, None)


@asynccontextmanager
async def _exclusive(setup: Erasures) -> AsyncIterator[None]:
    """One erasure at a time, in this process and in every other on the same ledger (an
    intent seen while it is held was left by an erasure cut short, not one under way)."""
    async with setup.lock, held_off(setup.ledger):
        yield


async def _swept(ctx: Context, setup: Erasures, patient_id: str, reason: str, *,
                 address: str | None = None, job: str | None = None, requested: bool = False,
                 unless_updated_since: datetime | None = None,
                 resumed: dict[str, Any] | None = None, checkpoint: bool = True) -> dict[str, Any]:
    """`sweep` under `_exclusive`; `resumed`: the intent of an erasure cut short, finished."""
    intent = resumed or await asyncio.to_thread(
        _intent, ctx.principal, patient_id, reason, job, setup.keys, requested, unless_updated_since)
    if resumed is None:
        await asyncio.to_thread(setup.ledger.intend, intent)
    # Subscription events are sealed under the outbox's key, not the patient's: removed
    # before the store's erasure (a process dying right after it leaves none) and after it
    # (events of writes that raced with it). A conditional erasure the store may refuse
    # must leave everything as it was: its events go right after the store's erasure only.
    since = intent.get("unless_updated_since")
    if resumed is not None and since is not None and await ctx.store.read("Patient", patient_id) is None:
        # The store's erasure (one transaction, the Patient removed last) committed before the
        # process died: the rest is finished whole, whatever was written since.
        since = None
    events = await forget_events(ctx.store, patient_id) if since is None else set()
    await kept_registers.stash(ctx.store, ctx.registry, patient_id, clock.now().date())
    try:
        erased = await ctx.store.erase(compartment(ctx.registry, patient_id), ("Patient", patient_id),
                                       None if since is None else datetime.fromisoformat(since),
                                       checkpoint=checkpoint)
    except FhirError as error:
        if since is not None and error.kind is Kind.CONFLICT:
            await kept_registers.drop(ctx.store, patient_id)
            await asyncio.to_thread(setup.ledger.withdraw, intent)
        raise
    await forget_figures(ctx.store)  # at once: the kept Consents still hold the patient's
    [done] = await _completed(ctx, setup, [(intent, erased, events)], address=address, resumed=resumed)
    if isinstance(done, FhirError):
        raise done
    return done


async def sweep_together(ctx: Context, patient_ids: Sequence[str], reason: str, *,
                         unless_updated_since: datetime) -> list[dict[str, Any] | FhirError]:
    """`sweep` of each of `patient_ids`, conditional (the retention's archives: checkpoint
    left to the caller), the store's erasures in one call (`Store.erase_each`: SQLite writes
    the pages the records share once), under one hold of the ledger. Each erasure is
    announced before the store's call and settled after its own ledger entry and
    AuditEvent: a process killed in between, or an error of one member after the store's
    call, leaves announced erasures that `finish_left` finishes one by one, as it finishes
    one. Per patient, in order: the output Parameters, or the FhirError of that erasure
    alone (CONFLICT: the store refused it, and nothing else was done for it either, as
    `sweep`)."""
    setup = _setup(ctx)
    async with _exclusive(setup):
        intents = [await asyncio.to_thread(_intent, ctx.principal, patient_id, reason, None,
                                           setup.keys, False, unless_updated_since)
                   for patient_id in patient_ids]
        for intent in intents:
            await asyncio.to_thread(setup.ledger.intend, intent)
            await kept_registers.stash(ctx.store, ctx.registry, intent["patient"], clock.now().date())
        outcomes: list[Erasure | FhirError] = await ctx.store.erase_each(
            [Erase(compartment(ctx.registry, patient_id), ("Patient", patient_id), unless_updated_since)
             for patient_id in patient_ids], checkpoint=False)
        # From here on each member's trouble is its own: one member's error, or the figures'
        # (which the erased members need forgotten first), leaves its intent for `finish_left`
        # and never stops the others' ledger entries and AuditEvents.
        for number, (intent, erased) in enumerate(zip(intents, outcomes, strict=True)):
            if isinstance(erased, FhirError) and erased.kind is Kind.CONFLICT:
                try:
                    await kept_registers.drop(ctx.store, intent["patient"])
                    await asyncio.to_thread(setup.ledger.withdraw, intent)
                except FhirError as error:
                    outcomes[number] = error
        if any(not isinstance(erased, FhirError) for erased in outcomes):
            try:
                await forget_figures(ctx.store)
            except FhirError as error:
                outcomes = [erased if isinstance(erased, FhirError) else error for erased in outcomes]
        completed = iter(await _completed(ctx, setup, [
            (intent, erased, set[str]()) for intent, erased in zip(intents, outcomes, strict=True)
            if not isinstance(erased, FhirError)]))
        return [erased if isinstance(erased, FhirError) else next(completed) for erased in outcomes]


async def _completed(ctx: Context, setup: Erasures, swept: list[tuple[dict[str, Any], Erasure, set[str]]],
                     *, address: str | None = None, resumed: dict[str, Any] | None = None
                     ) -> list[dict[str, Any] | FhirError]:
    """The rest of each erasure of `swept` (its intent, what the store's erasure removed, the
    subscription events forgotten before it) once the store's is done and the day's figures
    forgotten: what lies outside the store's resources, the keys, the ledger entries (one
    write for them all), each AuditEvent, each intent settled. Per erasure, in order: the
    output Parameters, or the FhirError that stopped it (the others go on)."""
    done: dict[int, dict[str, Any] | FhirError] = {}
    shredded: list[tuple[int, dict[str, Any], Erasure, set[str], list[bytes]]] = []
    for number, (intent, erased, events) in enumerate(swept):
        try:
            found = await _outside(ctx, setup, intent, erased, events, resumed)
            if found is not None:
                done[number] = found
                continue
            keys = await asyncio.to_thread(_shred, setup.keys, intent["patient"], intent.get("keys", ())
                                           ) if setup.keys else []
            shredded.append((number, intent, erased, events, keys))
        except FhirError as error:
            done[number] = error
    entries = await asyncio.to_thread(setup.ledger.append_each, [
        _entry(intent, erased, keys) for _, intent, erased, _, keys in shredded]) if shredded else []
    for (number, intent, erased, events, keys), entry in zip(shredded, entries, strict=True):
        try:
            await setup.record(erasure_event(
                recorded=entry["erased"], principal=_asker(ctx.principal, intent) if resumed else ctx.principal,
                address=address, patient=intent["patient"],
                reason=entry["reason"], counts=counts_of(erased), keys=len(keys), events=len(events)))
            await asyncio.to_thread(setup.ledger.settle, intent)
            done[number] = parameters(entry)
        except FhirError as error:
            done[number] = error
    return [done[number] for number in range(len(swept))]


async def _outside(ctx: Context, setup: Erasures, intent: dict[str, Any], erased: Erasure,
                   events: set[str], resumed: dict[str, Any] | None) -> dict[str, Any] | None:
    """Erase what `intent`'s patient left outside the store's resources (`events` grows
    with the subscription events forgotten); when the erasure found nothing and the ledger
    says what the last one did, settle it and return that erasure's output."""
    patient_id = intent["patient"]
    await kept_registers.flush(ctx.store, patient_id)
    events |= await forget_events(ctx.store, patient_id)
    await notifications.forget(ctx, f"Patient/{patient_id}")  # outside the compartment
    await export.forget(ctx, patient_id)  # export files are sealed under no key of theirs
    if setup.messages is not None:  # the HL7 v2 inbox's, sealed under a key of their own
        await setup.messages(patient_id)
    if intent.get("requested") and setup.forget is not None:
        await setup.forget(ctx, patient_id)
    # The ledger is read for the last erasure only when this one found nothing: an erasure
    # that removed something reads it once, in `append` (a read costs time in proportion to
    # the erasures ever made, and a retention run makes thousands).
    if (resumed is None and not erased.resources and not events
            and (done := await asyncio.to_thread(setup.ledger.find, patient_id)) is not None
            and not await _cut_short(setup.ledger, intent)):
        await asyncio.to_thread(setup.ledger.settle, intent)
        return parameters(done)
    return None


async def _cut_short(ledger: ErasureLedger, intent: dict[str, Any]) -> bool:
    """Whether an earlier erasure of `intent`'s patient was announced and never settled (a
    request that failed part way: the keys it was to destroy may be left)."""
    return any(other["patient"] == intent["patient"] and other["started"] < intent["started"]
               for other in await asyncio.to_thread(ledger.intended))


def _intent(principal: Principal | None, patient_id: str, reason: str, job: str | None,
            keys: KeyShredder | None, requested: bool,
            unless_updated_since: datetime | None = None) -> dict[str, Any]:
    """What an erasure's intent records: whom, when it started, why, who asked, whether it
    was requested (`sweep`), its condition if any, and the ids of the data keys it is to
    destroy (a process killed after destroying them could not list them in the ledger
    otherwise)."""
    who = principal.fhir_user or principal.subject if principal else "unknown"
    ids = keys.keys_of(patient_scope(patient_id), retired=True) if keys else []
    return {"patient": patient_id, "started": clock.instant(), "reason": reason, "by": who,
            "client": principal.client_id if principal else None, "job": job,
            "keys": [key.hex() for key in ids], "requested": requested,
            "unless_updated_since": None if unless_updated_since is None else unless_updated_since.isoformat(),
            "subject": principal.subject if principal else None,
            "fhir_user": principal.fhir_user if principal else None}


def _asker(principal: Principal | None, intent: dict[str, Any]) -> Principal | None:
    """Who the AuditEvent of `intent`'s erasure names: who asked for it, when the server
    (`principal`) finishes one cut short (intents written before they kept it: the server)."""
    if principal is None or intent.get("subject") is None:
        return principal
    return replace(principal, subject=intent["subject"], fhir_user=intent.get("fhir_user"),
                   client_id=intent.get("client") or "")


def _shred(keys: KeyShredder, patient_id: str, announced: Sequence[str]) -> list[bytes]:
    """Destroy the patient's data keys, retired ones included (they still open older
    AuditEvents and backups); the ids of those destroyed, with those the intent `announced`
    (destroyed already by a process killed since). The ledger keeps them: `audit verify` tells
    AuditEvents shredded by the erasure from damaged ones by them, and start-up and `restore`
    destroy them again in a datakeys.db put back from a key backup."""
    scope = patient_scope(patient_id)
    ids = [bytes.fromhex(key) for key in announced] + keys.keys_of(scope, retired=True)
    keys.destroy(scope)
    return list(dict.fromkeys(ids))


def destroyed_keys(ledger: ErasureLedger) -> frozenset[bytes]:
    """The ids of every data key an erasure destroyed, from the ledger."""
    return frozenset(bytes.fromhex(k) for entry in ledger.entries() for k in entry.get("keys", ()))


def _entry(intent: dict[str, Any], erased: Erasure, keys: list[bytes]) -> dict[str, Any]:
    """The ledger entry of an erasure: who, when, why, counts; no erased content."""
    return {"patient": intent["patient"], "erased": clock.instant(), "reason": intent["reason"],
            "by": intent["by"], "client": intent["client"], "keys_destroyed": len(keys),
            "keys": [key.hex() for key in keys], "resources": erased.resources,
            "versions": erased.versions, "job": intent["job"]}


async def forget_figures(store: Store) -> None:
    """Drop every study's counts of the day (they count the erased patient), and mark it, so
    that a figures pass under way, which may have read them, stores none."""
    keys = tuple(key for key, _ in await store.outbox(FIGURES_PREFIX))
    await store.commit([Outbox(put=((FIGURES_ERASED, new_id().encode()),), remove=keys)])


def counts_of(erased: Erasure) -> dict[str, tuple[int, int]]:
    """Per type, (resources, versions) erased."""
    return {t: (erased.resources.get(t, 0), erased.versions.get(t, 0))
            for t in sorted({*erased.resources, *erased.versions})}  # versions alone: moved out


async def replay(store: Store, registry: Registry, record: Callable[[dict[str, Any]], Awaitable[str]],
                 entry: dict[str, Any], when: str) -> None:
    """Erase again the patient of ledger `entry` (their data came back: a restore) and record
    it; `when` says on what occasion ("on restore")."""
    patient = entry["patient"]
    events = await forget_events(store, patient)  # before and after, as `sweep`
    # No register copy made here: the originals a backup holds are sealed under the destroyed
    # keys (a backup taken after the erasure holds the copies, outside the compartment). One
    # taken between the erasure's stash and its store erasure holds the copies stashed.
    erased = await store.erase(compartment(registry, patient), ("Patient", patient))
    await kept_registers.flush(store, patient)
    events |= await forget_events(store, patient)
    await forget_figures(store)
    reason = f"erasure of {entry['erased']} by {entry['by']} replayed {when}: {entry['reason']}"
    await record(erasure_event(
        recorded=clock.instant(), principal=server_principal("fhir-server"), address=None,
        patient=patient, reason=reason, counts=counts_of(erased), keys=0, events=len(events)))


async def reconcile(ctx: Context) -> list[str]:
    """At start-up, before serving: finish each erasure a killed process left announced but
    not settled, then erase again each patient of the ledger whose Patient the store holds in
    a version from before their erasure (a store put back from files, not by
    `fhir-server restore`); the patients erased again. An id reused by a Patient created
    since is left alone."""
    if ctx.erasures is None:
        return []
    again, stopped = await finish_left(ctx)
    if stopped:
        raise next(iter(stopped.values()))
    for entry in await asyncio.to_thread(ctx.erasures.ledger.entries):
        try:
            found = await ctx.store.read("Patient", entry["patient"])
            back = found is not None and found.last_updated <= entry["erased"]
        except UnreadableBody:  # sealed under the key the erasure destroyed: it is back
            back = True
        if back:
            await replay(ctx.store, ctx.registry, ctx.erasures.record, entry, "at start-up")
            again.append(entry["patient"])
    return again


async def finish_left(ctx: Context) -> tuple[list[str], dict[str, FhirError]]:
    """Finish each erasure a process left announced but not settled (killed, or stopped by
    an error after the store's erasure: `sweep_together`); the patients erased, and those
    whose erasure stopped again, with the error (their intents stay for the next try)."""
    if ctx.erasures is None:
        return [], {}
    again: list[str] = []
    stopped: dict[str, FhirError] = {}
    tried: set[str] = set()
    # one at a time: finishing one settles the older intents for its patient too
    while left := [intent for intent in await asyncio.to_thread(ctx.erasures.ledger.intended)
                   if intent["token"] not in tried]:
        tried.add(left[0]["token"])
        try:
            if await _finish(ctx, left[0]):
                again.append(left[0]["patient"])
        except FhirError as error:
            stopped[left[0]["patient"]] = error
            if error.kind is Kind.BUSY:  # the store is away or overloaded: the others would wait too
                break
    return again, stopped


async def _finish(ctx: Context, intent: dict[str, Any]) -> bool:
    """Finish the erasure of `intent`: sweep again and write what was missing, or, if its
    ledger entry was written before the process died, only the AuditEvent that may be missing
    (an erasure killed after its event and before settling has it twice). False if another
    process (a worker starting at the same time) finished it first, or if its condition
    refused it (the compartment was written to since: `sweep`; the intent is withdrawn)."""
    setup = _setup(ctx)
    async with _exclusive(setup):
        if intent["token"] not in {i["token"] for i in await asyncio.to_thread(setup.ledger.intended)}:
            return False
        last = await asyncio.to_thread(setup.ledger.find, intent["patient"])
        if last is not None and last["erased"] >= intent["started"]:
            await setup.record(erasure_event(
                recorded=last["erased"], principal=_asker(ctx.principal, intent), address=None,
                patient=intent["patient"], reason=last["reason"],
                counts=counts_of(Erasure(last["resources"], last["versions"])),
                keys=last["keys_destroyed"], events=0))
            await asyncio.to_thread(setup.ledger.settle, intent)
        else:
            try:
                await _swept(ctx, setup, intent["patient"], intent["reason"], job=intent["job"],
                             resumed=intent)
            except FhirError as error:
                if error.kind is not Kind.CONFLICT or intent.get("unless_updated_since") is None:
                    raise
                return False
    return True


def parameters(entry: dict[str, Any]) -> dict[str, Any]:
    """The output of $erase (a Parameters resource), from its ledger entry."""
    counts = [{"name": "erased", "part": [
        {"name": "type", "valueCode": t}, {"name": "resources", "valueInteger": entry["resources"].get(t, 0)},
        {"name": "versions", "valueInteger": entry["versions"].get(t, 0)}]}
        for t in sorted({*entry["resources"], *entry["versions"]})]
    return {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": f"Patient/{entry['patient']}"}},
        {"name": "erasedAt", "valueInstant": entry["erased"]},
        {"name": "reason", "valueString": entry["reason"]},
        {"name": "keysDestroyed", "valueInteger": entry["keys_destroyed"]},
        *counts]}


# -- asynchronous requests (FHIR async pattern: 202 + Content-Location, then poll) ---------


async def start(ctx: Context, patient_id: str, reason: str, *, address: str | None) -> str:
    """Run the erasure in the background (after `begin`); returns the job's id. The job is
    noted in the store's outbox first, so that every worker answers its status."""
    setup = _setup(ctx)
    for done in [id for id, job in setup.jobs.items() if job.task.done()][:-KEPT_JOBS or None]:
        del setup.jobs[done]  # the outbox, then the ledger, still answer for them
    job = new_id()
    owner = _owner(ctx.principal)
    await _forget_old_jobs(ctx.store)
    await _note(ctx.store, job, {"owner": owner, "at": clock.seconds()})
    task = asyncio.get_running_loop().create_task(_run(ctx, job, owner, patient_id, reason, address))
    task.add_done_callback(_log_failure)
    setup.jobs[job] = Job(owner, task)
    return job


def _owner(principal: Principal | None) -> str:
    """Who a job answers to: the user (subject) as the FHIR identity they acted as."""
    return f"{principal.subject} {principal.fhir_user or ''}" if principal else ""


async def _run(ctx: Context, job: str, owner: str, patient_id: str, reason: str,
               address: str | None) -> dict[str, Any]:
    """Erasure job `job`, its end noted for every worker: its output, or its error (one that
    is no FhirError is the server's fault, logged by `_log_failure`)."""
    try:
        output = await erase(ctx, patient_id, reason, address=address, job=job)
    except Exception as error:
        failed = error if isinstance(error, FhirError) else fail(
            Kind.FAULT, "exception", "The erasure failed; the server log says why.")
        await _note(ctx.store, job, {"owner": owner, "at": clock.seconds(), "error": {
            "kind": failed.kind.value, "issues": [asdict(i) for i in failed.issues]}})
        raise
    await _note(ctx.store, job, {"owner": owner, "at": clock.seconds(), "output": output})
    return output


async def _note(store: Store, job: str, record: dict[str, Any]) -> None:
    await store.commit([Outbox(put=((f"{JOB_PREFIX}{job}", orjson.dumps(record)),))])


async def _forget_old_jobs(store: Store) -> None:
    """Drop the notes of jobs untouched for KEPT_JOB_SECONDS (the ledger answers for them)."""
    old = tuple(key for key, body in await store.outbox(JOB_PREFIX)
                if orjson.loads(body)["at"] < clock.seconds() - KEPT_JOB_SECONDS)
    if old:
        await store.commit([Outbox(remove=old)])


def _log_failure(task: asyncio.Task[dict[str, Any]]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("asynchronous erasure failed", exc_info=error)


async def status(ctx: Context, job: str) -> dict[str, Any] | None:
    """The output of job `job` once done (None while it runs), or the error it met; NOT_FOUND
    for a job of another caller, or one no worker noted and the ledger does not know. This
    process's own jobs first, then the note in the outbox (a job another worker runs), then
    the ledger (a job whose note was dropped, or cut short by a crash and finished since)."""
    setup = _setup(ctx)
    principal = ctx.principal
    if principal is None:
        raise _no_job(job)
    found = setup.jobs.get(job)
    if found is not None:
        if found.owner != _owner(principal):
            raise _no_job(job)
        return found.task.result() if found.task.done() else None  # raises the job's error
    body = await one(ctx.store, f"{JOB_PREFIX}{job}")
    noted = orjson.loads(body) if body is not None else None
    if noted is not None and noted["owner"] != _owner(principal):
        raise _no_job(job)
    if noted is not None and "output" in noted:
        return dict(noted["output"])
    if noted is not None and "error" in noted:
        raise FhirError(Kind(noted["error"]["kind"]), tuple(
            Issue(**{**i, "expression": tuple(i["expression"])}) for i in noted["error"]["issues"]))
    entries = await asyncio.to_thread(setup.ledger.entries)
    mine = (principal.fhir_user, principal.subject)
    done = next((e for e in entries if e.get("job") == job and e.get("by") in mine), None)
    if done is not None:
        return parameters(done)
    if noted is not None:
        return None  # running in another worker
    raise _no_job(job)


def _no_job(job: str) -> Exception:
    return fail(Kind.NOT_FOUND, "not-found", f"No erasure job {job} of this caller.")
