"""A patient's clinical record as the caller may read it, for operations that reason on it
(trial matching): the Patient, then the resources of each asked type *about* that patient,
every read checked by the caller's access (404 for a patient out of reach; a type the caller
may not search is left out and named) and noted on the request's audit trail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from ..model.errors import FhirError
from ..search import parse_query
from ..store.base import Version
from . import crud
from .context import Context
from .guard import decision, note

PAGE = 1000
MOST = 20_000  # resources of one record, at most (beyond: the rest is not read, and said)


@dataclass(frozen=True, slots=True)
class PatientRecord:
    versions: tuple[Version, ...]  # the Patient first
    unreadable: tuple[str, ...]  # types the caller may not search
    truncated: bool  # more than MOST resources: the rest was not read


async def read(ctx: Context, patient_id: str, types: Sequence[str]) -> PatientRecord:
    """Patient/`patient_id` and its resources of `types` (each about the patient: its
    `patient` search parameter), newest versions, as the caller reaches them."""
    patient = await crud.read(ctx, "Patient", patient_id)
    versions: list[Version] = [patient]
    unreadable: list[str] = []
    for resource_type in types:
        try:
            allowed = decision(ctx, "search", resource_type)
        except FhirError:
            unreadable.append(resource_type)
            continue
        query, _ = parse_query(resource_type, [("patient", f"Patient/{patient_id}"),
                                               ("_count", str(PAGE))], ctx.registry)
        query = allowed.confine(query)
        cursor = None
        while len(versions) <= MOST:  # one past MOST tells that the record is larger
            page = await ctx.store.search(query, cursor)
            for version in page.matches:
                if version.body is not None:
                    note(ctx, version)
                    versions.append(version)
            cursor = page.next_cursor
            if cursor is None:
                break
    return PatientRecord(tuple(versions[:MOST]), tuple(unreadable), len(versions) > MOST)


def bodies(record: PatientRecord) -> list[dict[str, object]]:
    """The resources of a record, parsed."""
    return [orjson.loads(v.body) for v in record.versions if v.body is not None]
