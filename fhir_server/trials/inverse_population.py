"""Who an investigator's figures are drawn from and their records (trials/inverse_counts.py,
inverse.py), read as the server at the least cost the answer allows.

- **Agreements kept.** Who is counted and who allows pre-screening is decided by every active
  Consent: two per patient, 200,000 at 100,000 patients, seconds to read and to judge. They
  are kept per process with the newest Consent history entry seen, and read again when it
  changes (every Consent write, deletion included, from any worker, makes a new one): a
  withdrawal takes effect at the next call, as when they were read at each call. Who is
  counted is judged once per day and set of Consents; the pre-screening rule is judged only
  for patients one of whose Consents names its purpose at all.
- **Pruned before the rest is kept.** The trial's index proves a patient ineligible from their
  diagnoses alone (eligibility.py `TrialIndex`): the Patients and Conditions are read first,
  and of the other resources (Observations, treatments, the Medications they name) only those
  of the patients the index leaves are kept and evaluated.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from ..search import parse_query
from ..services import reach, study_access
from ..services.context import Context
from ..services.server_writes import as_server
from ..store.base import Store, Version
from .eligibility import TrialIndex, pinned, read_record
from .eligibility_record import TYPES
from .catalogue_history import Stamp, newest
from .match_catalogue import shared

PAGE = 1000
CHUNK = 100  # patients named by one search of their records
PRESCREENING = b'"trial-pre-screening"'  # the purpose code (access/consent.py PRESCREENING)
Entries = list[tuple[str, dict[str, Any]]]


@dataclass(slots=True)
class Agreements:
    """Every active Consent by patient, as of `stamp`, and what was judged of them."""

    stamp: Stamp
    by_patient: study_access.Agreements
    # Patients one of whose Consents holds the pre-screening purpose code: a superset of
    # those the rule allows for some study (the rule itself is applied to these alone).
    asking: frozenset[str]
    counted_on: dict[str, frozenset[str]] = field(default_factory=dict)  # by day

    def counted(self, day: str) -> frozenset[str]:
        """The patients who may be counted on `day` (study_access.counted)."""
        if day not in self.counted_on:
            self.counted_on.clear()  # one day kept
            self.counted_on[day] = frozenset(p for p in self.by_patient
                                             if study_access.counted(self.by_patient, p, day))
        return self.counted_on[day]

    def prescreened(self, study: str, day: str) -> list[str]:
        """The counted patients whose Consent allows pre-screening for `study`
        (`ResearchStudy/<id>`), in id order. Only they are judged: a call served from the
        day's figures (trials/figures_pass.py) needs no one else's."""
        return [p for p in sorted(self.asking) if study_access.counted(self.by_patient, p, day)
                and study_access.prescreened(self.by_patient, p, study, day)]


_KEPT: weakref.WeakKeyDictionary[Store, Agreements] = weakref.WeakKeyDictionary()


async def agreements(ctx: Context) -> Agreements:
    """The active Consents as stored now (kept until a Consent is written)."""
    stamp = (await newest(ctx, "Consent"),)
    kept = _KEPT.get(shared(ctx))
    if kept is not None and kept.stamp == stamp:
        return kept
    by_patient = await study_access.agreements(as_server(ctx))
    asking = frozenset(p for p, consents in by_patient.items()
                       if any(PRESCREENING in orjson.dumps(c) for c in consents))
    kept = _KEPT[shared(ctx)] = Agreements(stamp, by_patient, asking)
    return kept


@dataclass(frozen=True, slots=True)
class Population:
    counted: tuple[Version, ...]  # the Patient versions counted
    pruned: tuple[str, ...]  # ids of the patients the index proves ineligible
    records: dict[str, Entries]  # the others' records, by patient id


async def population(ctx: Context, index: TrialIndex, today: date) -> Population:
    """The patients counted on `today`: those `index` prunes, the others with their records."""
    server = as_server(ctx)
    counted = (await agreements(ctx)).counted(today.isoformat())
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
    wanted: dict[str, list[str]] = defaultdict(list)  # Medication/<id> -> the patients naming it
    for resource_type in TYPES:
        if resource_type in ("Patient", "Condition", "Medication"):
            continue
        for start in range(0, len(patients), CHUNK):
            named = ",".join(f"Patient/{p}" for p in patients[start:start + CHUNK])
            async for resource in reach.matching(ctx, resource_type, [("patient", named)]):
                owner = study_access.owner(resource)
                if owner in records:
                    records[owner].append((pinned(resource), resource))
                    target = (resource.get("medicationReference") or {}).get("reference", "").split("/_history/")[0]
                    if target.startswith("Medication/"):
                        wanted[target].append(owner)
    ids = sorted(target.removeprefix("Medication/") for target in wanted)
    for start in range(0, len(ids), CHUNK):
        async for medication in reach.matching(ctx, "Medication", [("_id", ",".join(ids[start:start + CHUNK]))]):
            for owner in dict.fromkeys(wanted[f"Medication/{medication['id']}"]):
                records[owner].append((pinned(medication), medication))


def _versions(ctx: Context, resource_type: str) -> AsyncIterator[Version]:
    """Every current version of `resource_type`, page after page."""
    query, _ = parse_query(resource_type, [("_count", str(PAGE))], ctx.registry)
    return reach.current_versions(ctx, query)
