"""Who an investigator's figures are drawn from and their records (trials/inverse_counts.py,
inverse.py), read as the server at the least cost the answer allows.

- **Agreements kept.** Who is counted is decided by every active Consent: two per patient,
  200,000 at 100,000 patients, seconds to read and to judge. They are kept per process and
  brought up to date from the history (consents_kept.py): a withdrawal takes effect at the
  next call. Who is counted is judged once per day, and again after a write only for the
  patients whose Consents it changed.
- **Pruned before the rest is kept.** The trial's index proves a patient ineligible from their
  diagnoses alone (eligibility.py `TrialIndex`): the Patients and Conditions are read first,
  and of the other resources (Observations, treatments, the Medications they name) only those
  of the patients the index leaves are kept and evaluated.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from ..search import parse_query
from ..services import reach, study_access
from ..services.context import Context
from ..services.server_writes import as_server
from ..store.base import Version
from . import consents_kept
from .eligibility import TrialIndex, pinned, read_record
from .eligibility_record import TYPES, medication_id

PAGE = 1000
CHUNK = 100  # patients named by one search of their records
Entries = list[tuple[str, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Population:
    counted: tuple[Version, ...]  # the Patient versions counted
    pruned: tuple[str, ...]  # ids of the patients the index proves ineligible
    records: dict[str, Entries]  # the others' records, by patient id


async def population(ctx: Context, index: TrialIndex, today: date) -> Population:
    """The patients counted on `today`: those `index` prunes, the others with their records."""
    server = as_server(ctx)
    counted = (await consents_kept.agreements(ctx)).counted(today.isoformat())
    patients: dict[str, Version] = {}
    records: dict[str, Entries] = {}
    async for version in _versions(server, "Patient"):
        if version.id in counted:
            patients[version.id] = version
            resource = orjson.loads(version.body or b"{}")
            records[version.id] = [(pinned(resource), resource)]
    async for version in _versions(server, "Condition"):
        resource = orjson.loads(version.body or b"{}")
        owner = study_access.owner(resource)
        if owner in records:
            records[owner].append((pinned(resource), resource))
    pruned = tuple(p for p in sorted(records) if index.candidates(read_record(records[p], today))[1])
    for patient in pruned:
        del records[patient]
    await _rest(server, records)
    return Population(tuple(patients[p] for p in sorted(patients)), pruned, records)


async def _rest(ctx: Context, records: dict[str, Entries]) -> None:
    """Add to `records` their patients' other resources and the Medications these name, read
    by `patient` searches naming CHUNK patients each (both stores drive such a search from
    the patients' index entries), so that only the records left after pruning are read."""
    patients = sorted(records)
    wanted: dict[str, list[str]] = defaultdict(list)  # Medication id -> the patients naming it
    for resource_type in TYPES:
        if resource_type in ("Patient", "Condition", "Medication"):
            continue
        for start in range(0, len(patients), CHUNK):
            named = ",".join(f"Patient/{p}" for p in patients[start:start + CHUNK])
            async for resource in reach.matching(ctx, resource_type, [("patient", named)]):
                owner = study_access.owner(resource)
                if owner in records:
                    records[owner].append((pinned(resource), resource))
                    if (id := medication_id(resource)) is not None:
                        wanted[id].append(owner)
    ids = sorted(wanted)
    for start in range(0, len(ids), CHUNK):
        async for medication in reach.matching(ctx, "Medication", [("_id", ",".join(ids[start:start + CHUNK]))]):
            for owner in dict.fromkeys(wanted[medication["id"]]):
                records[owner].append((pinned(medication), medication))


def _versions(ctx: Context, resource_type: str) -> AsyncIterator[Version]:
    """Every current version of `resource_type`, page after page."""
    query, _ = parse_query(resource_type, [("_count", str(PAGE))], ctx.registry)
    return reach.current_versions(ctx, query)
