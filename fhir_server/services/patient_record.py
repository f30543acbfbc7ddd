"""A patient's clinical record as the caller may read it, for operations that reason on it
(trial matching): the Patient, then the resources of each asked type *about* that patient,
every read checked by the caller's access (404 for a patient out of reach; a type the caller
may not search is left out and named) and noted on the request's audit trail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..model.errors import FhirError, Kind
from ..search import MAX_VALUES, IndexEntry, Query, ReferenceEntry, extract, parse_query
from ..store.base import Version
from . import crud
from .context import Context
from .guard import decision, note

PAGE = 1000
MOST = 20_000  # resources of one record, at most (beyond: the rest is not read, and said)
TOGETHER = MAX_VALUES  # patients whose resources of a type one search asks for


@dataclass(frozen=True, slots=True)
class PatientRecord:
    versions: tuple[Version, ...]  # the Patient first
    unreadable: tuple[str, ...]  # types the caller may not search
    truncated: bool  # more than MOST resources: the rest was not read
    resources: tuple[dict[str, Any], ...]  # `versions` parsed


async def read(ctx: Context, patient_id: str, types: Sequence[str]) -> PatientRecord:
    """Patient/`patient_id` and its resources of `types` (each about the patient: its
    `patient` search parameter), newest versions, as the caller reaches them."""
    [record] = (await _about(ctx, [await crud.read(ctx, "Patient", patient_id)], types)).values()
    return record


async def read_all(ctx: Context, patient_ids: Sequence[str], types: Sequence[str]) -> dict[str, PatientRecord]:
    """`read` of each patient the caller reaches (the others, and deleted Patients, left
    out), their resources of a type asked for TOGETHER patients at a time: the same records,
    in a hundredth of the searches (a physician's 200 consented patients:
    ResearchStudy/{id}/$match)."""
    patients = []
    for patient_id in patient_ids:
        try:
            patients.append(await crud.read(ctx, "Patient", patient_id))
        except FhirError as exc:
            if exc.kind not in (Kind.NOT_FOUND, Kind.GONE):
                raise
    return await _about(ctx, patients, types)


async def _about(ctx: Context, patients: Sequence[Version], types: Sequence[str]) -> dict[str, PatientRecord]:
    """The records of `patients`: each Patient, then its resources of `types`."""
    found = {p.id: [(p, orjson.loads(p.body or b"{}"))] for p in patients}
    unreadable: list[str] = []
    for resource_type in types:
        try:
            allowed = decision(ctx, "search", resource_type)
        except FhirError:
            unreadable.append(resource_type)
            continue
        # A type without the parameter (Medication) is about no patient: its search reads all
        # the caller may, and every record holds it (as each did read alone).
        shared = ctx.registry.get(resource_type, "patient") is None
        for at in range(0, len(found), TOGETHER):
            named = list(found)[at:at + TOGETHER]
            query, _ = parse_query(resource_type, [("patient", ",".join(f"Patient/{id}" for id in named)),
                                                   ("_count", str(PAGE))], ctx.registry)
            await _gather(ctx, allowed.confine(query), found, set(named), shared)
    return {id: PatientRecord(tuple(v for v, _ in read[:MOST]), tuple(unreadable), len(read) > MOST,
                              tuple(r for _, r in read[:MOST]))
            for id, read in found.items()}


async def _gather(ctx: Context, query: Query, found: dict[str, list[tuple[Version, dict[str, Any]]]],
                  named: set[str], shared: bool) -> None:
    """Add the matches of `query` to the records of the `named` patients whose `patient`
    parameter they match (`shared`: to every one), up to one past MOST each (which tells
    that a record is larger). Paging stops once every one of them is past MOST; a larger
    record beside smaller ones is read through, and kept to MOST."""
    cursor = None
    while any(len(found[id]) <= MOST for id in named):
        page = await ctx.store.search(query, cursor)
        for version in page.matches:
            if version.body is None:
                continue
            resource = orjson.loads(version.body)
            entries = extract(resource)
            note(ctx, version, resource, entries)
            for id in (named if shared else _patients(entries) & named):
                if len(found[id]) <= MOST:
                    found[id].append((version, resource))
        cursor = page.next_cursor
        if cursor is None:
            return


def _patients(entries: Sequence[IndexEntry]) -> set[str]:
    """The patients a resource's `patient` search parameter names on this server."""
    return {e.id for e in entries if type(e) is ReferenceEntry and e.param == "patient"
            and e.type == "Patient" and e.url is None and e.id}


def bodies(record: PatientRecord) -> list[dict[str, object]]:
    """The resources of a record, parsed."""
    return list(record.resources)
