"""What the daily figures pass (figures_pass.py) counted, kept beside its snapshots so that an
erasure takes the erased patient out of them (figures_erasure.py) instead of dropping them
(docs/matching.md, "Erasure and the day's figures"). Outbox records, sealed at rest:

- `study_access.FIGURES_BASIS`, one small record read by every call served from a pass's
  snapshot: the pass's id and day, the erasure mark its figures hold under, the population
  (size and digest) its snapshots are rounded in, whether every snapshot is stored
  (`complete`), and a fingerprint of the catalogue it judged.
- `study_access.FIGURES_MEMBERS<xx>`, 256 shards: for each patient counted, under a keyed
  hash of their id (`token`, no id), the fingerprint of the record the pass judged (the
  versions of its resources), so that an erasure judges the same record again, or knows it
  cannot.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from ..services import study_access
from . import match_catalogue
from .eligibility import pinned

MEMBERS = study_access.FIGURES_MEMBERS


@dataclass(frozen=True, slots=True)
class Basis:
    """What one pass's snapshots were drawn from (module docstring)."""

    id: str
    day: str
    mark: str | None  # the erasure mark its snapshots hold under
    size: int
    digest: int
    catalogue: str  # `catalogue_fingerprint` of what was judged
    complete: bool = False  # every snapshot of the pass stored

    def population(self) -> tuple[int, int]:
        return self.size, self.digest


def dumped(basis: Basis) -> bytes:
    return orjson.dumps({"id": basis.id, "day": basis.day, "mark": basis.mark, "size": basis.size,
                         "digest": f"{basis.digest:x}", "catalogue": basis.catalogue,
                         "complete": basis.complete})


def loaded(body: bytes | None) -> Basis | None:
    if body is None:
        return None
    data = orjson.loads(body)
    return Basis(data["id"], data["day"], data["mark"], data["size"], int(data["digest"], 16),
                 data["catalogue"], data["complete"])


def mark_of(body: bytes | None) -> str | None:
    """The erasure mark as stored (study_access.FIGURES_ERASED), as a basis names it."""
    return None if body is None else body.decode()


def token(key: bytes, patient: str) -> str:
    """A patient's name in the member shards: a keyed hash of their id (not their share of
    a cell's digest, inverse_counts.member_digest)."""
    return hmac.digest(key, b"figures-member\x00" + patient.encode(), "sha256")[:16].hex()


def shard(found: str) -> str:
    """The record of the member shard holding `found` (a `token`)."""
    return f"{MEMBERS}{found[:2]}"


def shards(members: dict[str, str]) -> dict[str, dict[str, str]]:
    """`members` (token -> record fingerprint) by shard record."""
    found: dict[str, dict[str, str]] = {}
    for name, fingerprint in members.items():
        found.setdefault(shard(name), {})[name] = fingerprint
    return found


def record_fingerprint(resources: Iterable[dict[str, Any]]) -> str:
    """The versions of a record's resources (Medications named included), in one hash."""
    return hashlib.sha256("\n".join(sorted(pinned(r) for r in resources)).encode()).hexdigest()[:32]


def catalogue_fingerprint(catalogue: match_catalogue.Catalogue, today: date) -> str:
    """What a patient's cells depend on besides their record, for every study: its criteria
    (the versions of its eligibility Groups) and its sites recruiting on `today` with their
    places."""
    found = [(study, trial.groups, [(s.location, s.point) for s in catalogue.recruiting(study, today)])
             for study, trial in sorted(catalogue.trials.items())]
    return hashlib.sha256(orjson.dumps(found)).hexdigest()
