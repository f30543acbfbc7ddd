"""The retention run: what the policy (retention_policy.py) says must happen today, planned
rule by rule, then done (`fhir-server retention run [--dry-run]`, and the server's scheduled
job). A dry run is the plan; a real run does exactly the plan's actions (docs/privacy.md,
"The data's lifecycle").

Rules, in the order they run:
- post-mortem directives of patients marked deceased (postmortem.py);
- `patient-record`: a record **inactive** (no resource of the patient's compartment created or
  updated) since a day D is archived on the first day T with `T - inactive >= D`: a
  pseudonymised copy is written (pseudonym.py) and the original erased as `$erase` does;
  the archive is erased `archived` after it was made, unless a legal hold stands;
- `second-opinion-report`: a DiagnosticReport of category `second-opinion` is available from
  its `issued` day (or its last change, if later: a report brought back from the archive) for
  `available`, then archived (out of the API; `unarchive` brings it back) and erased
  `archived` later;
- `tele-expertise`: a ServiceRequest of category `tele-expertise` whose responder set its
  `retention-period` extension is erased (with what is `basedOn` it) that long after its last
  change; its requester is warned `warned` before;
- `connection-logs`, `access-logs`: AuditEvents pruned at a signed checkpoint (audit/prune.py);
- `accounts`: inactive accounts warned, closed, then erased (retention_accounts.py);
- `backups`: archives older than `kept` removed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from itertools import groupby
from typing import Any, Protocol

from .. import clock
from ..model.errors import FhirError, Kind, fail
from ..model.platform_codes import CANONICAL
from ..services import lifecycle, reach, server_writes
from ..services.context import Context
from ..services.erase import finish_left, sweep, sweep_together
from . import postmortem, retention_accounts
from .retention_accounts import AccountBook
from .retention_holds import Holds
from .pseudonym import PSEUDED, Pseudonyms
from .retention_policy import Period, Policy

RECORD_KIND = f"{CANONICAL}/CodeSystem/record-kind"
RETENTION_PERIOD = f"{CANONICAL}/StructureDefinition/retention-period"
PSEUDED_TOKEN = f"{PSEUDED['system']}|{PSEUDED['code']}"
_UCUM_DAYS = {"d": 1, "wk": 7}
_UCUM_MONTHS = {"mo": 1, "a": 12}
# Inactive records archived together: their copies are written in one unit of work, then their
# originals erased in one store transaction (`sweep_together`). A record's copies dirty some
# 1,700 pages of a large SQLite store (index rows all over its B-trees), its erasure as many,
# and a transaction writes each page it changed once: records alike (the same codes,
# practitioners, organisations) share many. Meanwhile the next records' copies are made on
# the event loop.
ARCHIVED_TOGETHER = 8
# Copies made and indexed at once. Making and indexing them runs on the event loop, which
# the server's requests share: a whole record at once (some 120 resources) held it 20 to 50
# ms; a slice of this many holds it a few ms. The copies are then written in one unit of work
# with those of the records archived together.
MADE_AT_ONCE = 16
# Records whose erasures leave the store's write-ahead log to one checkpoint
# (`Store.checkpoints_deferred`): each erasure checkpointing its own copied home, record after
# record, the pages the next records change again (docs/privacy.md, "eleventh session").
CHECKPOINTED_TOGETHER = 64
log = logging.getLogger(__name__)


class AuditPruning(Protocol):
    """The audit trail's pruning (audit/prune.py `Trimmer`)."""

    async def due(self, before: dict[str, date]) -> dict[str, list[str]]: ...

    async def prune(self, due: dict[str, list[str]]) -> Any: ...


class BackupPruning(Protocol):
    """The backup archives (their names, and the day each was taken)."""

    def taken(self) -> dict[str, date]: ...

    def remove(self, names: list[str]) -> None: ...


class Warnings(Protocol):
    """Notices to people (notify/ `enqueue`): those scheduled under a key prefix, and a new one."""

    async def scheduled(self, prefix: str) -> set[str]: ...

    async def warn(self, *, person: str, template: str, params: dict[str, str],
                   not_before: datetime, key: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Action:
    """One thing a run does: `rule`, `step` (archive, erase, warn, prune, ...), on `target`;
    `count` for a prune of many; `detail` what it needs (not part of what is reported)."""

    rule: str
    step: str
    target: str
    count: int = 1
    detail: Any = field(default=None, compare=False)


@dataclass(slots=True)
class Plan:
    """What a run does on `today`; `kept` what a legal hold keeps from it, with why."""

    today: date
    actions: list[Action] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[Action, str]] = field(default_factory=list)  # by the real run: why

    def counts(self) -> dict[str, int]:
        """Per `rule step`, how many resources (or events, or archives)."""
        totals: Counter[str] = Counter()
        for action in self.actions:
            totals[f"{action.rule} {action.step}"] += action.count
        return dict(sorted(totals.items()))

    def lines(self) -> list[str]:
        """The plan, one line per action, as a dry run prints it."""
        out = [f"{a.rule}: {a.step} {a.target}" + (f" ({a.count})" if a.count != 1 else "")
               for a in self.actions]
        return out + [f"kept under a legal hold: {target}: {why}" for target, why in self.kept]

    def failures(self) -> list[str]:
        """What the real run could not do, and why (the next run tries again)."""
        return [f"{a.rule}: {a.step} {a.target} FAILED: {why}" for a, why in self.failed]


@dataclass(frozen=True)
class Lifecycle:
    """What a run needs: the service context (acting as the server), the policy, the
    pseudonyms, the legal holds, and the pruning of the audit trail and of backups, the
    warnings and the user accounts (None: that part is not run, and the plan says nothing
    of it)."""

    ctx: Context
    policy: Policy
    pseudonyms: Pseudonyms
    holds: Holds
    audit: AuditPruning | None = None
    backups: BackupPruning | None = None
    warnings: Warnings | None = None
    accounts: AccountBook | None = None

    @property
    def server(self) -> Context:
        return server_writes.as_server(self.ctx, "fhir-server retention")

    @cached_property
    def personal(self) -> frozenset[str]:
        """The types whose references an archive pseudonymises: the Patient and those of
        its compartment."""
        return frozenset({"Patient", *lifecycle.compartment_types(self.ctx)})


async def plan(life: Lifecycle, today: date | None = None) -> Plan:
    """What a run on `today` (default: the clock's) would do, rule by rule."""
    made = Plan(today or clock.now().date())
    await postmortem.plan(life, made)
    await _plan_records(life, made)
    await _plan_reports(life, made)
    await _plan_tele_expertise(life, made)
    await _plan_logs(life, made)
    await retention_accounts.plan(life, made)
    _plan_backups(life, made)
    return made


async def run(life: Lifecycle, *, dry_run: bool = False,
              record: Callable[[Plan, bool], Awaitable[object]] | None = None) -> Plan:
    """Plan today's run and, unless `dry_run`, do it; `record` (its AuditEvent) is called
    with the plan either way."""
    if not dry_run:
        await _finish_left(life)
    made = await plan(life)
    if not dry_run:
        await apply(life, made)
    if record is not None:
        await record(made, dry_run)
    return made


async def _finish_left(life: Lifecycle) -> None:
    """Finish first the erasures a run (or a request) left announced: a retention process
    never starts the server, whose start would finish them (`reconcile`)."""
    again, stopped = await finish_left(life.server)
    if again or stopped:
        log.warning("retention finished erasures left announced",
                    extra={"finished": len(again), "stopped": len(stopped)})


async def apply(life: Lifecycle, made: Plan) -> None:
    """Do the plan's actions, in order but for the archiving of inactive records, several
    together; what fails goes to `made.failed` (the next run tries again). The store's log
    is checkpointed as the run starts (what a run killed before its end left there goes
    first) and as it ends, and, while records are archived, every CHECKPOINTED_TOGETHER
    records: till then it may hold what their erasures removed."""
    async with life.ctx.store.checkpoints_deferred():
        for together, actions in groupby(made.actions, key=lambda a: a.rule == "patient-record"
                                         and a.step == "archive"):
            if together:
                await _archive_inactive(life, list(actions), made)
            else:
                for action in actions:
                    await _attempt(life, action, made)


async def _attempt(life: Lifecycle, action: Action, made: Plan) -> None:
    try:
        await _do(life, action, made.today)
    except FhirError as error:  # one record's trouble does not stop the others
        _failed(made, action, error)


def _failed(made: Plan, action: Action, error: FhirError) -> None:
    made.failed.append((action, "; ".join(issue.diagnostics for issue in error.issues)))
    log.error("retention action failed", extra={"rule": action.rule, "step": action.step})


async def _archive_inactive(life: Lifecycle, actions: list[Action], made: Plan) -> None:
    """The records of `actions` archived ARCHIVED_TOGETHER at a time (`archive`, but the
    copies of records together in one unit of work, and their originals erased together),
    the copies of the next ones made while those are written and erased."""
    inactive = life.policy.period("patient-record", "inactive")
    active_from, reason = _next(inactive.before(made.today)), f"retention: record inactive for {inactive}"

    async def copied(group: list[Action]) -> dict[Action, list[server_writes.ServerWrite]]:
        found = {}
        for action in group:
            try:
                found[action] = await _copies(life, action.target.split("/")[1], active_from)
            except FhirError as error:  # active again since the plan: kept
                _failed(made, action, error)
        return found

    groups = [actions[at:at + ARCHIVED_TOGETHER] for at in range(0, len(actions), ARCHIVED_TOGETHER)]
    # A resource in two records (an Observation about one, performed by the other) has one
    # copy: a record kept does not remove the copy another's archive holds (its original
    # erased, before or in this group), whose original that archive's erasure removes.
    archived: set[str] = set()
    unchecked = 0  # records erased since the last checkpoint
    making = asyncio.ensure_future(copied(groups[0]))
    for following in [*groups[1:], None]:
        ready = await making
        if following is not None:
            making = asyncio.ensure_future(copied(following))
        try:
            await _write_copies(life, ready, made)
            archived |= await _erase_unless_active(life, ready, active_from, reason, archived, made)
            unchecked += len(ready)
            if unchecked >= CHECKPOINTED_TOGETHER:
                await life.ctx.store.checkpoint()
                unchecked = 0
        except BaseException:
            making.cancel()
            raise


async def _erase_unless_active(life: Lifecycle, ready: dict[Action, list[server_writes.ServerWrite]],
                               active_from: date, reason: str, archived: set[str],
                               made: Plan) -> set[str]:
    """Erase the originals of `ready`'s records, whose copies are written, together
    (`sweep_together`: one store transaction), unless one became active since its copies
    were made (a group's time ago): then its copies go instead, but those another record's
    archive holds (`archived` before, or one of `ready` erased), the record is kept
    (CONFLICT), and nothing written meanwhile is erased with no copy made of it. The store
    checks each record's activity in the transaction that erases it (`Store.erase_each`,
    conditional), so that no write lands between the check and the erasure; a refused
    erasure destroys no data key and forgets nothing. The references of the records erased."""
    if not ready:
        return set()
    ids = [action.target.split("/")[1] for action in ready]
    try:
        outcomes = await sweep_together(life.server, ids, reason,
                                        unless_updated_since=datetime.combine(active_from, time(), UTC))
    except FhirError as error:  # stopped, its erasures left announced (`finish_left`)
        for action in ready:
            _failed(made, action, error)
        return {reference for copies in ready.values() for reference in _references(copies)}
    # A record not refused may have its original erased already, its erasure left announced
    # by an error after the store's: its copies are held as an erased one's (one too many
    # kept is safe; removing the only copy of an erased original is not).
    erased: set[str] = set()
    active = []
    for (action, copies), outcome in zip(ready.items(), outcomes, strict=True):
        if isinstance(outcome, FhirError) and outcome.kind is Kind.CONFLICT:
            active.append((action, copies))
            continue
        erased |= _references(copies)
        if isinstance(outcome, FhirError):
            _failed(made, action, outcome)
    # The references of the run's archives are not merged into one new set: that copied
    # every reference the run archived so far (a million at 1M resources) per record, a cost
    # growing with the run's square.
    for action, copies in active:
        await lifecycle.erase_resources(life.server, _references(copies).difference(archived, erased))
        _failed(made, action, fail(Kind.CONFLICT, "conflict", f"{action.target}'s record changed "
                                   "while it was archived: it is active again, and kept"))
    return erased


def _references(writes: list[server_writes.ServerWrite]) -> set[str]:
    return {f"{w.resource['resourceType']}/{w.resource['id']}" for w in writes}


async def _write_copies(life: Lifecycle, ready: dict[Action, list[server_writes.ServerWrite]],
                        made: Plan) -> None:
    """Write the copies of `ready`'s records in one unit; if it is refused, each record's
    alone, so that only a record whose copies are refused fails (it leaves `ready`)."""
    try:
        await server_writes.commit(life.server, [w for writes in ready.values() for w in writes])
        return
    except FhirError:
        if len(ready) == 1:
            raise
    for action, writes in list(ready.items()):
        try:
            await server_writes.commit(life.server, writes)
        except FhirError as error:
            _failed(made, action, error)
            del ready[action]


def _next(day: date) -> date:
    return day + timedelta(days=1)


def _day(instant: str) -> date:
    return date.fromisoformat(instant[:10])


async def _plan_records(life: Lifecycle, made: Plan) -> None:
    policy = life.policy
    last_day = policy.period("patient-record", "inactive").before(made.today)
    # Archives are left out: they name pseudonyms, never a live patient, and every archive
    # of the last `inactive` would otherwise be read and indexed again by every daily plan.
    active = await lifecycle.changed_since(life.ctx, _next(last_day),
                                           [("_security:not", PSEUDED_TOKEN)])
    async for patient in reach.matching(life.ctx, "Patient", [
            ("_lastUpdated", f"lt{_next(last_day)}"), ("_security:not", PSEUDED_TOKEN)]):
        if patient["id"] not in active:
            made.actions.append(Action("patient-record", "archive", f"Patient/{patient['id']}"))
    archived_by = policy.period("patient-record", "archived").before(made.today)
    async for patient in reach.matching(life.ctx, "Patient", [
            ("_lastUpdated", f"lt{_next(archived_by)}"), ("_security", PSEUDED_TOKEN)]):
        why = await life.holds.held(patient["id"])
        if why:
            made.kept.append((f"Patient/{patient['id']}", why))
        else:
            made.actions.append(Action("patient-record", "erase", f"Patient/{patient['id']}"))


async def _plan_reports(life: Lifecycle, made: Plan) -> None:
    policy = life.policy
    last_day = policy.period("second-opinion-report", "available").before(made.today)
    async for report in reach.matching(life.ctx, "DiagnosticReport", [
            ("category", f"{RECORD_KIND}|second-opinion")]):
        start = max(_day(report.get("issued") or report["meta"]["lastUpdated"]),
                    _day(report["meta"]["lastUpdated"]))
        if start <= last_day:
            made.actions.append(Action("second-opinion-report", "archive",
                                       f"DiagnosticReport/{report['id']}", detail=report))
    archived_by = policy.period("second-opinion-report", "archived").before(made.today)
    for key, archived in sorted((await lifecycle.records(life.ctx, "archive")).items()):
        if date.fromisoformat(archived["archived"]) <= archived_by:
            made.actions.append(Action("second-opinion-report", "erase", archived["reference"],
                                       detail=key))


def responder_period(request: dict[str, Any]) -> Period | None:
    """The retention period the responder set on a tele-expertise request (extension
    `retention-period`, a Duration in d, wk, mo or a); None if unset or unreadable."""
    for extension in request.get("extension", []):
        if extension.get("url") != RETENTION_PERIOD:
            continue
        duration = extension.get("valueDuration", {})
        value, code = duration.get("value"), duration.get("code")
        if not isinstance(value, int) or value < 1:
            return None
        if code in _UCUM_DAYS:
            return Period(days=value * _UCUM_DAYS[code])
        if code in _UCUM_MONTHS:
            return Period(months=value * _UCUM_MONTHS[code])
    return None


async def _plan_tele_expertise(life: Lifecycle, made: Plan) -> None:
    warned = life.policy.period("tele-expertise", "warned")
    sent = await life.warnings.scheduled("retention/tele-expertise/") if life.warnings else set()
    async for request in reach.matching(life.ctx, "ServiceRequest", [
            ("category", f"{RECORD_KIND}|tele-expertise")]):
        period = responder_period(request)
        if period is None:
            continue
        target = f"ServiceRequest/{request['id']}"
        deletion = period.after(_day(request["meta"]["lastUpdated"]))
        if deletion <= made.today:
            made.actions.append(Action("tele-expertise", "erase", target))
        elif (life.warnings is not None and warned.before(deletion) <= made.today
              and request.get("requester", {}).get("reference")
              and _warning_key(request, deletion) not in sent):
            made.actions.append(Action("tele-expertise", "warn", target,
                                       detail=(request, deletion)))


def _warning_key(request: dict[str, Any], deletion: date) -> str:
    return f"retention/tele-expertise/{request['id']}/{deletion}"


async def _plan_logs(life: Lifecycle, made: Plan) -> None:
    if life.audit is None:
        return
    before = {kind: _next(life.policy.period(kind, "kept").before(made.today))
              for kind in ("connection-logs", "access-logs")}
    due = await life.audit.due(before)
    for kind, ids in due.items():
        if ids:
            made.actions.append(Action(kind, "prune", "AuditEvent", len(ids), detail=ids))


def _plan_backups(life: Lifecycle, made: Plan) -> None:
    if life.backups is None:
        return
    last_day = life.policy.period("backups", "kept").before(made.today)
    for name, taken in sorted(life.backups.taken().items()):
        if taken <= last_day:
            made.actions.append(Action("backups", "remove", name))


async def _do(life: Lifecycle, action: Action, today: date) -> None:
    server = life.server
    match (action.rule, action.step):
        case ("post-mortem", "pseudonymise"):
            await archive(life, action.target.split("/")[1], "post-mortem directive: erase "
                          "(pseudonymised instead: a legal hold)")
        case ("patient-record", "erase"):
            await sweep(server, action.target.split("/")[1], "retention: archive kept for "
                        f"{life.policy.period('patient-record', 'archived')}")
        case ("post-mortem", "erase"):  # the patient's own wish: their archived reports too
            await sweep(server, action.target.split("/")[1], "post-mortem directive: erase",
                        requested=True)
        case ("post-mortem", "communicate"):
            await postmortem.communicate(life, action)
        case ("second-opinion-report", "archive"):
            report = action.detail
            await lifecycle.keep_records(server, put={
                f"{lifecycle.PREFIX}archive/{action.target}": {
                    "reference": action.target, "archived": today.isoformat(),
                    "patient": _subject(report), "resource": report}})
            await lifecycle.erase_resources(server, [action.target])
        case ("second-opinion-report", "erase"):
            await lifecycle.keep_records(server, remove=[action.detail])
        case ("tele-expertise", "warn"):
            request, deletion = action.detail
            assert life.warnings is not None
            await life.warnings.warn(
                person=request["requester"]["reference"], template="retention-warning",
                params={"date": deletion.isoformat()},
                not_before=datetime.combine(today, time(), clock.now().tzinfo),
                key=_warning_key(request, deletion))
        case ("tele-expertise", "erase"):
            id = action.target.split("/")[1]
            based = [f"{t}/{r['id']}" for t in ("Communication", "DiagnosticReport", "Observation")
                     async for r in reach.matching(server, t, [("based-on", action.target)])]
            await lifecycle.erase_resources(server, [action.target, *based])
            log.info("tele-expertise request erased", extra={"request": id, "with": len(based)})
        case ("connection-logs" | "access-logs", "prune"):
            assert life.audit is not None
            await life.audit.prune({action.rule: action.detail})
        case ("accounts", step):
            await retention_accounts.do(life, step, action.target, action.detail)
        case ("backups", "remove"):
            assert life.backups is not None
            life.backups.remove([action.target])


def _subject(resource: dict[str, Any]) -> str | None:
    reference = resource.get("subject", {}).get("reference", "")
    return reference.split("/")[1] if reference.startswith("Patient/") else None


async def archive(life: Lifecycle, patient_id: str, reason: str) -> str:
    """Replace Patient/`patient_id`'s record by its pseudonymised copy: the copy written
    (as the server, through the service layer), then the original erased as `$erase` does
    (ledger, data keys, AuditEvent). The archive's Patient id."""
    await server_writes.commit(life.server, await _copies(life, patient_id))
    await sweep(life.server, patient_id, reason)
    return life.pseudonyms.of(f"Patient/{patient_id}")


async def _copies(life: Lifecycle, patient_id: str, active_from: date | None = None
                  ) -> list[server_writes.ServerWrite]:
    """The writes of Patient/`patient_id`'s pseudonymised copy, made and indexed slice by
    slice, the event loop free between slices. CONFLICT if a resource of the record changed
    on `active_from` or later (it became active again since the plan)."""
    found = await lifecycle.record_of(life.server, patient_id)
    if active_from is not None and any(_day(r["meta"]["lastUpdated"]) >= active_from for r in found):
        raise fail(Kind.CONFLICT, "conflict", f"Patient/{patient_id}'s record changed since the "
                   "plan: it is active again, and kept")
    record = [r for r in found if r["resourceType"] not in postmortem.NOT_ARCHIVED]
    copier = life.pseudonyms.copier(life.personal)
    # Not validated again: the copy of a valid resource is valid (pseudonym.py).
    writes: list[server_writes.ServerWrite] = []
    for start in range(0, len(record), MADE_AT_ONCE):
        if start:
            await asyncio.sleep(0)
        writes += [server_writes.indexed(server_writes.ServerWrite(copy, new=False, valid=True))
                   for copy in copier.copies(record[start:start + MADE_AT_ONCE])]
    return writes


async def pseudonymise_instead(life: Lifecycle, ctx: Context, patient_id: str, reason: str,
                               why: str) -> dict[str, Any]:
    """`$erase` of a record under a legal hold (services/erase.py `Erasures.instead`): the
    record is archived under a pseudonym, the original erased; the output says so and why."""
    await archive(life, patient_id, f"erasure requested ({reason}); pseudonymised instead: {why}")
    message = (f"Patient/{patient_id} is under a legal hold: {why}. The record was not erased "
               "but pseudonymised: your name, contact details and identifiers are gone from "
               "it, and what remains can no longer be linked to you without a key the platform "
               "holds apart; it will be erased when the hold ends and its retention is over.")
    return {"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": f"Patient/{patient_id}"}},
        {"name": "pseudonymisedAt", "valueInstant": clock.instant()},
        {"name": "reason", "valueString": reason},
        {"name": "legalHold", "valueString": why},
        {"name": "outcome", "resource": {"resourceType": "OperationOutcome", "issue": [
            {"severity": "information", "code": "informational", "diagnostics": message}]}}]}


async def unarchive(life: Lifecycle, reference: str) -> None:
    """Make an archived second-opinion report available again (as the server, through the
    service layer), for another `available` period; NOT_FOUND if it is not archived."""
    key = f"{lifecycle.PREFIX}archive/{reference}"
    found = (await lifecycle.records(life.ctx, "archive")).get(key)
    if found is None:
        raise fail(Kind.NOT_FOUND, "not-found", f"{reference} is not in the archive.")
    resource = {k: v for k, v in found["resource"].items() if k != "meta"}
    await server_writes.commit(life.server, [server_writes.ServerWrite(resource)])
    await lifecycle.keep_records(life.server, remove=[key])


async def forget_archived(ctx: Context, patient_id: str) -> None:
    """After an erasure: the patient's archived second-opinion reports go too
    (services/erase.py `Erasures.forget`)."""
    found = await lifecycle.records(ctx, "archive")
    await lifecycle.keep_records(ctx, remove=[k for k, v in found.items() if v.get("patient") == patient_id])
