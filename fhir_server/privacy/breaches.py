"""The register of personal data breaches (GDPR arts. 33-34, as the platform's terms apply
them): each suspected breach a Task, kept in the store like any resource (so sealed like one),
with its deadlines in hours of calendar time (the controller told within 48 h of discovery,
the authority within 72 h) and the patients whose data the audit trail shows exposed.

A Task of the register: `code` `breach` (REGISTER_SYSTEM), `description` what happened, `owner`
the controller (Organization), `authoredOn` the moment of discovery, `input`s the two
deadlines, the exposure window (valuePeriod) and each system involved (an agent reference or
a client id), `output`s each exposed Patient and the moments each party was told. `status`
received, then in-progress once one party was told, completed once both were. The Task
names no patient in `for` or `focus`: it lies in no patient's compartment."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ..model.errors import FhirError
from ..model.platform_codes import BREACH, REGISTER_SYSTEM
from ..services import reach, server_writes
from ..services.context import Context
from .register import RegisterError, check_past, require

STEP_SYSTEM = f"{REGISTER_SYSTEM}-step"
CONTROLLER_HOURS, AUTHORITY_HOURS = 48, 72
PARTIES = {"controller": CONTROLLER_HOURS, "authority": AUTHORITY_HOURS}
WINDOW, ACTOR, CLIENT, EXPOSED = "exposure-window", "involved-actor", "involved-client", "exposed-patient"
_PATIENT_ROLE = ("http://terminology.hl7.org/CodeSystem/object-role", "1")


@dataclasses.dataclass(frozen=True, slots=True)
class Overdue:
    """An open breach whose party was not told in time."""

    id: str
    discovered: datetime
    party: str  # "controller" or "authority"
    deadline: datetime


def _instant(moment: datetime) -> str:
    """`moment` as a FHIR dateTime in UTC."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _item(code: str, **value: Any) -> dict[str, Any]:
    return {"type": {"coding": [{"system": STEP_SYSTEM, "code": code}]}, **value}


def _code(item: Mapping[str, Any]) -> str:
    return str(item["type"]["coding"][0]["code"])


def deadline(discovered: datetime, party: str) -> datetime:
    """When `party` must have been told of a breach discovered at `discovered`."""
    return discovered + timedelta(hours=PARTIES[party])


async def exposed(ctx: Context, start: datetime, end: datetime, actors: Sequence[str],
                  clients: Sequence[str]) -> list[str]:
    """The patients (`Patient/<id>`) the audit trail shows the actors (agent references) or
    clients (agent altId) reached between `start` and `end`, sorted."""
    period = [("date", f"ge{_instant(start)}"), ("date", f"le{_instant(end)}")]
    events: list[dict[str, Any]] = []
    try:
        if actors:
            events += await reach.find(ctx, "AuditEvent", [*period, ("agent", ",".join(actors))])
        if clients:
            events += await reach.find(ctx, "AuditEvent", [*period, ("altid", ",".join(clients))])
    except FhirError as error:  # more events than one decision reads: narrow the window
        raise RegisterError(error.issues[0].diagnostics) from None
    return sorted({what for event in events for entity in event.get("entity", [])
                   if (entity.get("role") or {}).get("system") == _PATIENT_ROLE[0]
                   and entity["role"].get("code") == _PATIENT_ROLE[1]
                   and (what := (entity.get("what") or {}).get("reference", "")).startswith("Patient/")})


async def add(ctx: Context, *, discovered: datetime, start: datetime, end: datetime,
              controller: str, description: str, actors: Sequence[str] = (),
              clients: Sequence[str] = ()) -> dict[str, Any]:
    """Register a breach discovered at `discovered`, exposing data between `start` and `end`
    through `actors` and `clients`; the Task stored."""
    if start > end:
        raise RegisterError(f"the exposure window starts ({_instant(start)}) after it ends "
                            f"({_instant(end)})")
    check_past(discovered, "a breach discovered at")
    if discovered < start:
        raise RegisterError("a breach is discovered after its exposure window starts")
    if not actors and not clients:
        raise RegisterError("name the systems involved: at least one --actor or --client")
    if not description.strip():
        raise RegisterError("describe the breach (--description)")
    for actor in actors:
        kind, _, id = actor.partition("/")
        if not kind or not id or "/" in id:
            raise RegisterError(f"an actor is Type/id: {actor!r}")
    await require(ctx, controller, "Organization")
    patients = await exposed(ctx, start, end, actors, clients)
    task = {"resourceType": "Task", "id": str(uuid.uuid4()), "status": "received",
            "intent": "order",
            "code": {"coding": [{"system": REGISTER_SYSTEM, "code": BREACH}],
                     "text": "personal data breach"},
            "description": description.strip(), "owner": {"reference": controller},
            "authoredOn": _instant(discovered),
            "input": [*(_item(f"{party}-deadline", valueDateTime=_instant(deadline(discovered, party)))
                        for party in PARTIES),
                      _item(WINDOW, valuePeriod={"start": _instant(start), "end": _instant(end)}),
                      *(_item(ACTOR, valueReference={"reference": a}) for a in actors),
                      *(_item(CLIENT, valueString=c) for c in clients)],
            "output": [_item(EXPOSED, valueReference={"reference": p}) for p in patients]}
    if not patients:  # FHIR has no empty arrays
        del task["output"]
    await server_writes.commit(ctx, [server_writes.ServerWrite(task)])
    return task


async def _breach(ctx: Context, id: str) -> dict[str, Any]:
    task = await reach.current(ctx, f"Task/{id}")
    if task is None or not _is_breach(task):
        raise RegisterError(f"no breach Task/{id}")
    return task


def _is_breach(task: Mapping[str, Any]) -> bool:
    return any(c.get("system") == REGISTER_SYSTEM and c.get("code") == BREACH
               for c in (task.get("code") or {}).get("coding", []))


def told(task: Mapping[str, Any]) -> dict[str, datetime]:
    """The parties told of the breach, and when."""
    return {_code(o).removesuffix("-notified"): _moment(o["valueDateTime"])
            for o in task.get("output", []) if _code(o).endswith("-notified")}


async def notify(ctx: Context, id: str, party: str, at: datetime) -> dict[str, Any]:
    """Record that `party` was told of breach `id` at `at`."""
    if party not in PARTIES:
        raise RegisterError(f"unknown party {party!r}: one of {', '.join(PARTIES)}")
    check_past(at, f"the {party} told at")
    task = await _breach(ctx, id)
    discovered = _moment(task["authoredOn"])
    done = told(task)
    if at < discovered:
        raise RegisterError(f"the {party} cannot be told ({_instant(at)}) before the breach was "
                            f"discovered ({task['authoredOn']})")
    if party in done:
        raise RegisterError(f"the {party} was already told of Task/{id} at {_instant(done[party])}")
    task["output"] = [*task.get("output", []), _item(f"{party}-notified", valueDateTime=_instant(at))]
    task["status"] = "completed" if len(done) + 1 == len(PARTIES) else "in-progress"
    task["lastModified"] = _instant(at)
    version = int(task["meta"]["versionId"])
    task.pop("meta", None)
    await server_writes.commit(ctx, [server_writes.ServerWrite(task, new=False, if_match=version)])
    return task


def _late(task: Mapping[str, Any], at: datetime) -> list[Overdue]:
    discovered = _moment(task["authoredOn"])
    done = told(task)
    return [Overdue(task["id"], discovered, party, due) for party in PARTIES
            if party not in done and at > (due := deadline(discovered, party))]


async def overdue(ctx: Context, at: datetime) -> list[Overdue]:
    """The parties not told in time of the open breaches, as of `at`, oldest first."""
    tasks = await reach.find(ctx, "Task", [("code", f"{REGISTER_SYSTEM}|{BREACH}"),
                                           ("status", "received,in-progress")])
    late = [item for task in tasks for item in _late(task, at)]
    return sorted(late, key=lambda item: (item.deadline, item.id))
