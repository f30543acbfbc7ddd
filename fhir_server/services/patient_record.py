"""A patient's clinical record as the caller may read it, for operations that reason on it
(trial matching): the Patient, then the resources of each asked type *about* that patient,
every read checked by the caller's access (404 for a patient out of reach; a type the caller
may not search is left out and named) and noted on the request's audit trail."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..model.errors import FhirError, Kind
from ..model.types import is_valid_id
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
    """The records of `patients`: each Patient, then its resources of `types`. A type without
    a `patient` parameter (Medication) is about no patient: a record holds those of its
    resources it references, read last (before, every record held every one the caller
    reads, and a directory of more than MOST truncated every record)."""
    found = {p.id: [(p, orjson.loads(p.body or b"{}"))] for p in patients}
    unreadable: list[str] = []
    about = [t for t in types if ctx.registry.get(t, "patient") is not None]
    for resource_type in [*about, *(t for t in types if t not in about)]:
        try:
            allowed = decision(ctx, "search", resource_type)
        except FhirError:
            unreadable.append(resource_type)
            continue
        if resource_type in about:  # by the patients each names
            parameter, keys, wanted = "patient", _patients, {f"Patient/{id}": {id} for id in found}
        else:  # by id, the patients referencing each
            parameter, keys, wanted = "_id", _id, _referenced(ctx, found, resource_type)
        values = list(wanted)
        for at in range(0, len(values), TOGETHER):
            asked = {value: wanted[value] for value in values[at:at + TOGETHER]}
            query, _ = parse_query(resource_type, [(parameter, ",".join(asked)), ("_count", str(PAGE))],
                                   ctx.registry)
            await _gather(ctx, allowed.confine(query), found, keys, asked)
    return {id: PatientRecord(tuple(v for v, _ in read[:MOST]), tuple(unreadable), len(read) > MOST,
                              tuple(r for _, r in read[:MOST]))
            for id, read in found.items()}


def _referenced(ctx: Context, found: dict[str, list[tuple[Version, dict[str, Any]]]],
                resource_type: str) -> dict[str, set[str]]:
    """The ids of `resource_type` the records reference (relative, or under this server's
    base), each with the patients whose record does."""
    wanted: dict[str, set[str]] = {}
    prefixes = (f"{resource_type}/", f"{ctx.base_url}/{resource_type}/")
    for patient, read in found.items():
        for _, resource in read:
            for reference in _references(resource):
                for prefix in prefixes:
                    if reference.startswith(prefix):
                        target = reference.removeprefix(prefix).split("/_history/")[0]
                        if is_valid_id(target):  # a comma would name several
                            wanted.setdefault(target, set()).add(patient)
    return wanted


def _references(value: Any) -> Iterator[str]:
    """Every `reference` string within a resource."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                yield item
            elif isinstance(item, (dict, list)):
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


async def _gather(ctx: Context, query: Query, found: dict[str, list[tuple[Version, dict[str, Any]]]],
                  keys: Callable[[Version, list[IndexEntry]], set[str]], wanted: dict[str, set[str]]) -> None:
    """Add each match of `query` to the records of the patients `wanted` gives for its
    `keys`, up to one past MOST each (which tells that a record is larger). Paging stops
    once every one of them is past MOST; a larger record beside smaller ones is read through,
    and kept to MOST."""
    named = {id for owners in wanted.values() for id in owners}
    cursor = None
    while any(len(found[id]) <= MOST for id in named):
        page = await ctx.store.search(query, cursor)
        for version in page.matches:
            if version.body is None:
                continue
            resource = orjson.loads(version.body)
            entries = extract(resource)
            note(ctx, version, resource, entries)
            for id in {id for key in keys(version, entries) for id in wanted.get(key, ())}:
                if len(found[id]) <= MOST:
                    found[id].append((version, resource))
        cursor = page.next_cursor
        if cursor is None:
            return


def _id(version: Version, entries: Sequence[IndexEntry]) -> set[str]:
    return {version.id}


def _patients(version: Version, entries: Sequence[IndexEntry]) -> set[str]:
    """`Patient/<id>` of the patients a resource's `patient` search parameter names on
    this server."""
    return {f"Patient/{e.id}" for e in entries if type(e) is ReferenceEntry and e.param == "patient"
            and e.type == "Patient" and e.url is None and e.id}


def bodies(record: PatientRecord) -> list[dict[str, object]]:
    """The resources of a record, parsed."""
    return list(record.resources)
