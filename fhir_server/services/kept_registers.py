"""The operator's register of disclosures to authorities outlives the patient's erasure.

A disclosure (privacy/disclosures.py) is a Task `for` its patient, so in their compartment:
the patient reads it there when the law allows. The controller must still show, after an
erasure, what it gave to whom and on what legal basis (GDPR art. 5(2); art. 17(3)(b) and (e)
exempt what a legal obligation or a legal claim needs), so the erasure keeps a copy of each
under the same id, outside every compartment: `for` says only that its patient was erased and
when, each resource given is named by its type alone, the tag `subject-erased` replaces
`patient-visible`; who asked, the legal basis, what was given and the day stay. The copy is
sealed under the Task type's key, not the erased patient's.

Crash-safe in three steps around the store's erasure (services/erase.py): `stash` puts the
copies in the store's outbox (sealed, durable) before it, `flush` writes them as Tasks after
it and removes them, `drop` removes them when a conditional erasure was refused. An erasure
cut short is run again whole: its `stash` finds no original left and its `flush` writes what
the first run stashed, each copy once."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson

from ..model.platform_codes import DISCLOSURE, REGISTER_SYSTEM
from ..search import Registry, extract, parse_query
from ..store.base import Outbox, Store, Write

SUBJECT_ERASED = "subject-erased"  # meta.tag of a disclosure kept after its patient's erasure
_PREFIX = "kept-register/"


def _prefix(patient_id: str) -> str:
    return f"{_PREFIX}{patient_id}/"


# What a kept copy holds of the original: the register's own elements, nothing else (a note,
# an identifier, a narrative, another reference to the patient would outlive them).
_KEPT = ("resourceType", "id", "status", "intent", "code", "description", "authoredOn", "lastModified")


def kept_copy(task: dict[str, Any], erased_on: date) -> dict[str, Any]:
    """The copy of disclosure `task` kept after its patient's erasure on `erased_on`: who
    asked (`requester.display`), the legal basis (`reasonCode.text`), what was given
    (`description`, each output's type), the days."""
    copy = {key: task[key] for key in _KEPT if key in task}
    copy["meta"] = {"tag": [{"system": REGISTER_SYSTEM, "code": SUBJECT_ERASED}]}
    copy["for"] = {"display": f"a patient whose record was erased on {erased_on.isoformat()}"}
    for key, part in (("requester", "display"), ("reasonCode", "text")):
        if isinstance(task.get(key), dict) and part in task[key]:
            copy[key] = {part: task[key][part]}
    outputs = [{"type": output["type"], "valueString": f"{_given_type(output)} (erased)"}
               for output in task.get("output", ()) if "type" in output]
    if outputs:
        copy["output"] = outputs
    return copy


def _given_type(output: dict[str, Any]) -> str:
    """The type of the resource an output names, without its id ("a resource" if it says none)."""
    reference = output.get("valueReference") or {}
    named = reference.get("type") or str(reference.get("reference", "")).partition("/")[0]
    return named if named.isalpha() else "a resource"


async def stash(store: Store, registry: Registry, patient_id: str, erased_on: date) -> int:
    """Put in the outbox the kept copies of Patient/`patient_id`'s disclosures; how many."""
    query, _ = parse_query("Task", [("code", f"{REGISTER_SYSTEM}|{DISCLOSURE}"),
                                    ("patient", f"Patient/{patient_id}")], registry)
    copies = [kept_copy(orjson.loads(version.body or b"{}"), erased_on)
              for version in await store.gather([query]) if version.body]
    if copies:
        await store.commit([Outbox(put=tuple((f"{_prefix(patient_id)}{copy['id']}", orjson.dumps(copy))
                                             for copy in copies))])
    return len(copies)


async def flush(store: Store, patient_id: str) -> int:
    """Write the copies `stash` put aside (once the originals are erased); how many written."""
    pending = await store.outbox(_prefix(patient_id))
    if not pending:
        return 0
    writes = []
    for _, body in pending:
        copy = orjson.loads(body)
        if await store.read("Task", copy["id"]) is None:  # written by a run cut short after it
            writes.append(Write("Task", copy["id"], copy, extract(copy), "POST", create_only=True))
    await store.commit([*writes, Outbox(remove=tuple(key for key, _ in pending))])
    return len(writes)


async def drop(store: Store, patient_id: str) -> None:
    """Forget the copies `stash` put aside (the erasure was refused: the originals stay)."""
    pending = await store.outbox(_prefix(patient_id))
    if pending:
        await store.commit([Outbox(remove=tuple(key for key, _ in pending))])
