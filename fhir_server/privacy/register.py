"""The register of the rights requests people make (GDPR arts. 15-21): each one a Task, kept in
the store like any resource (so sealed like one), carrying its legal deadlines.

A Task of the register: `code` the right asked for, `requester` the person (not `for`, which
would put the Task in their compartment: their erasure would erase the record of its own
request, which the controller must keep to show it was answered), `owner` the controller
(Organization), `authoredOn` the day it was received, `restriction.period.end` the day it must be
answered by, an `input` the day it must be forwarded to the controller by, `output`s the days it
was forwarded and answered, `businessStatus` where it stands. `status` follows the Task state
machine: received, then in-progress once forwarded, then completed once answered."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from .. import clock
from ..model.platform_codes import CANONICAL, RIGHT_SYSTEM
from ..services import reach, server_writes
from ..services.context import Context
from .deadlines import answer_deadline, forward_deadline

STEP_SYSTEM = f"{CANONICAL}/CodeSystem/rights-request-step"
RIGHTS = ("access", "portability", "rectification", "erasure", "objection", "restriction")
FORWARD_BY, FORWARDED, ANSWERED = "forward-deadline", "forwarded", "answered"
# The first time zone to start a day (UTC+14): a day that has not begun there is in the future.
_FIRST_ZONE = timedelta(hours=14)


class RegisterError(ValueError):
    """A request the register refuses; nothing was stored."""


@dataclasses.dataclass(frozen=True, slots=True)
class Overdue:
    """An open request past one of its deadlines, and which."""

    id: str
    right: str
    patient: str
    received: date
    missed: str  # "forward" or "answer"
    deadline: date


def _step(code: str, day: date) -> dict[str, Any]:
    return {"type": {"coding": [{"system": STEP_SYSTEM, "code": code}]},
            "valueDate": day.isoformat()}


def _steps(task: Mapping[str, Any], key: str) -> dict[str, date]:
    return {item["type"]["coding"][0]["code"]: date.fromisoformat(item["valueDate"])
            for item in task.get(key, []) if item["type"]["coding"][0]["system"] == STEP_SYSTEM}


def check_past(when: date | datetime, what: str) -> None:
    """RegisterError if `when` has not come yet: a register holds what happened."""
    now = clock.now()
    if when > now if isinstance(when, datetime) else when > (now + _FIRST_ZONE).date():
        raise RegisterError(f"{what} {when.isoformat()} is in the future")


async def require(ctx: Context, reference: str, resource_type: str) -> None:
    """RegisterError unless `reference` names a stored resource of `resource_type`."""
    kind, _, id = reference.partition("/")
    if kind != resource_type or not id or await reach.current(ctx, reference) is None:
        raise RegisterError(f"no {resource_type} {reference}")


async def _task(ctx: Context, id: str) -> dict[str, Any]:
    task = await reach.current(ctx, f"Task/{id}")
    if task is None or not _right(task):
        raise RegisterError(f"no rights request Task/{id}")
    return task


def _right(task: Mapping[str, Any]) -> str | None:
    return next((c["code"] for c in task.get("code", {}).get("coding", [])
                 if c.get("system") == RIGHT_SYSTEM), None)


async def add(ctx: Context, *, patient: str, right: str, controller: str,
              received: date) -> dict[str, Any]:
    """Register a request `patient` made on `received`; the Task stored."""
    if right not in RIGHTS:
        raise RegisterError(f"unknown right {right!r}: one of {', '.join(RIGHTS)}")
    check_past(received, "a request received on")
    await require(ctx, patient, "Patient")
    await require(ctx, controller, "Organization")
    task = {"resourceType": "Task", "id": str(uuid.uuid4()), "status": "received",
            "intent": "order",
            "code": {"coding": [{"system": RIGHT_SYSTEM, "code": right}], "text": right},
            "requester": {"reference": patient}, "owner": {"reference": controller},
            "authoredOn": received.isoformat(),
            "restriction": {"period": {"end": answer_deadline(received).isoformat()}},
            "input": [_step(FORWARD_BY, forward_deadline(received))]}
    await server_writes.commit(ctx, [server_writes.ServerWrite(task)])
    return task


async def _advance(ctx: Context, id: str, step: str, on: date, status: str) -> dict[str, Any]:
    task = await _task(ctx, id)
    received = date.fromisoformat(task["authoredOn"][:10])
    done = _steps(task, "output")
    check_past(on, f"{step} on")
    if on < received:
        raise RegisterError(f"{step} on {on} is before the request was received ({received})")
    if FORWARDED in done and on < done[FORWARDED]:
        raise RegisterError(f"{step} on {on} is before it was forwarded ({done[FORWARDED]})")
    if step in done:
        raise RegisterError(f"Task/{id} was already {step} on {done[step]}")
    if task["status"] == "completed":
        raise RegisterError(f"Task/{id} is already answered")
    task["status"] = status
    task["businessStatus"] = {"coding": [{"system": STEP_SYSTEM, "code": step}],
                              "text": f"{step} {on.isoformat()}"}
    task["output"] = [*task.get("output", []), _step(step, on)]
    task["lastModified"] = on.isoformat()
    version = int(task["meta"]["versionId"])
    task.pop("meta", None)
    await server_writes.commit(ctx, [server_writes.ServerWrite(task, new=False, if_match=version)])
    return task


async def forward(ctx: Context, id: str, on: date) -> dict[str, Any]:
    """Record that request `id` was forwarded to the controller on `on`."""
    return await _advance(ctx, id, FORWARDED, on, "in-progress")


async def answer(ctx: Context, id: str, on: date) -> dict[str, Any]:
    """Record that request `id` was answered on `on`."""
    return await _advance(ctx, id, ANSWERED, on, "completed")


def _overdue(task: Mapping[str, Any], today: date) -> Overdue | None:
    done = _steps(task, "output")
    received = date.fromisoformat(task["authoredOn"][:10])
    missed = None
    if ANSWERED not in done and today > (end := date.fromisoformat(
            task["restriction"]["period"]["end"][:10])):
        missed = ("answer", end)
    elif FORWARDED not in done and today > (by := _steps(task, "input")[FORWARD_BY]):
        missed = ("forward", by)
    if missed is None:
        return None
    person = task.get("requester") or task["for"]  # `for`: registered before `requester` was used
    return Overdue(task["id"], _right(task) or "", person["reference"], received, *missed)


async def overdue(ctx: Context, today: date) -> list[Overdue]:
    """The open requests past a deadline on `today`, oldest received first."""
    codes = ",".join(f"{RIGHT_SYSTEM}|{right}" for right in RIGHTS)
    tasks = await reach.find(ctx, "Task", [("code", codes), ("status", "received,in-progress")])
    late = [item for task in tasks if (item := _overdue(task, today)) is not None]
    return sorted(late, key=lambda item: (item.received, item.id))
