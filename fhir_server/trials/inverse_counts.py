"""The figures an investigator sees of the inverse match (trials/inverse.py), under disclosure
control (docs/matching.md, "Disclosure control", with what an investigator can and cannot
infer).

- **Rounded from the top.** Patients are grouped into cells by everything a figure can tell
  about them: pruned by the index, or their verdict, the recruiting site nearest them and
  each criterion's verdict. The population's size is rounded first, to a multiple of BASE
  (up or down, never further than the next multiple; an exact multiple stays), unbiased,
  keyed by the server's key and drawn from its patients alone (`drawn`, from the order-free
  `set_digest` of its members): one figure in every study of the day. Then each level of a
  tree (pruned or evaluated; the verdict; the site; the cell) shares out its parent's
  figure among its parts (`apportioned`): each part takes the multiple of BASE below it,
  and as many parts as the parent's rounding leaves go one BASE more, chosen by keyed
  priorities drawn from each part's own members (Pareto order sampling: each goes up with
  a probability close to its remainder / BASE). Each criterion's row is the evaluated
  figure shared out the same way among that criterion's verdicts. So a figure depends on
  its own patients, its parent's figure and its siblings, never on how a study cuts it
  further: the population is one figure whatever the study; `pruned` and `evaluated` one
  figure in every study pruning the same patients; a criterion's row one row in every such
  study sharing it. Parts add up to their parent's figure, so no sum of figures has a mean
  over studies or criteria other than that figure.
- **Rows of zeros.** A row (a criterion, a site other than the study's own) whose figures
  all rounded to 0 is not listed, as when no patient is in it.
- **Daily snapshot.** The figures of a study are computed once a day (UTC), by the daily
  pass (figures_pass.py) or the study's first call, and kept in the store for every server
  process until the day changes, so that two calls around one new
  consent answer alike whichever worker takes them (differencing them would single out the
  newcomer).
"""

from __future__ import annotations

import hmac
import weakref
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

import orjson

from ..model.errors import FhirError, Kind
from ..services import study_access, subscriptions
from ..services.context import Context
from ..services.guard import note
from ..store.base import Outbox, Store, Version
from . import inverse_population, match_catalogue
from .eligibility import ELIGIBLE, INELIGIBLE, Trial, TrialIndex, judged, overall, read_record
from .eligibility_record import Record
from .match import home
from .gazetteer import Point

BASE = 5  # every published count is a multiple of this
VERDICTS = ("met", "not-met", "unknown", "not-applicable")
NO_SITE = ""  # patients placed near no recruiting site
Cell = tuple[str, ...]  # ("pruned",) or (verdict, site, criterion key=verdict, ...)
Rows = dict[str, dict[str, int]]  # the criteria's rows: by criterion key, by verdict
MODULUS = 2**256  # of a set's digest
Part = TypeVar("Part")


@dataclass(frozen=True, slots=True)
class Figures:
    """One study's snapshot: the rounded cells, the criteria texts, the Patients counted (read
    to compute it; not stored: 100,000 versions for each of 10,000 studies)."""

    day: str
    cells: dict[Cell, int]
    texts: dict[str, str]
    sites: tuple[str, ...]
    counted: tuple[Version, ...]
    criteria: Rows = field(default_factory=dict)


# Per store, per study: the stored snapshot record and its figures, parsed once.
_SNAPSHOTS: weakref.WeakKeyDictionary[Store, dict[str, tuple[bytes, Figures]]] = weakref.WeakKeyDictionary()


def member_digest(key: bytes, member: str) -> int:
    """A patient's share of a cell's digest: the HMAC of their id under `key`."""
    return int.from_bytes(hmac.digest(key, member.encode(), "sha256"), "big")


def set_digest(key: bytes, members: Iterable[str]) -> int:
    """The digest of a set of patients: their `member_digest`s summed modulo 2**256. It depends
    on the members alone, not on their order, and a cell's digest can be added up patient by
    patient or worked out as a difference (pruned = population - evaluated: the daily pass,
    figures_pass.py), without a list of the members."""
    return sum(member_digest(key, m) for m in members) % MODULUS


def drawn(key: bytes, size: int, digest: int) -> int:
    """`size` patients, whose `set_digest` is `digest`, rounded to an adjacent multiple of BASE:
    up with probability (size mod BASE) / BASE. Unbiased, and drawn from the members alone, so
    that the same patients round alike in every cell and study (else averaging the figures of
    several studies would recover the exact count). The draw is a keyed hash of the digest,
    not the digest itself: sums of the members' shares reveal nothing of how the parts round."""
    low, rest = divmod(size, BASE)
    if rest == 0:
        return size
    draw = hmac.digest(key, b"cell\x00" + digest.to_bytes(32, "big"), "sha256")
    return (low + (int.from_bytes(draw[:8], "big") % BASE < rest)) * BASE


def rounded(key: bytes, members: Iterable[str]) -> int:
    """The number of `members` rounded as `drawn` says."""
    found = list(members)
    return drawn(key, len(found), set_digest(key, found))


def apportioned(key: bytes, total: int, parts: dict[Part, tuple[int, int]]) -> dict[Part, int]:
    """`parts` (each its size and `set_digest`) of a set whose rounded size is `total` (its
    size rounded to an adjacent multiple of BASE), each rounded to an adjacent multiple so
    that they add up to `total`: each takes the multiple below it, and the parts left over
    go up, chosen among those with a remainder by Pareto order sampling (Rosen 1997): the
    smallest odds(priority) / odds(remainder / BASE) first, the priority a keyed hash of the
    part's digest. Each part then goes up with a probability close to remainder / BASE,
    decided by its own members before its siblings': a part whose members stay keeps its
    priority whatever else changes, so its draws over days or studies are not fresh coins
    whose mean is its size."""
    found = {part: size // BASE * BASE for part, (size, _) in parts.items()}
    ups = (total - sum(found.values())) // BASE
    left = [part for part, (size, _) in parts.items() if size % BASE]
    assert 0 <= ups <= len(left), "the total is not a rounding of the parts' sum"
    chosen = left if ups in (0, len(left)) else sorted(left, key=lambda p: _rank(key, *parts[p]))
    for part in chosen[:ups]:
        found[part] += BASE
    return found


def _rank(key: bytes, size: int, digest: int) -> tuple[float, int]:
    draw = hmac.digest(key, b"rank\x00" + digest.to_bytes(32, "big"), "sha256")
    priority = (int.from_bytes(draw[:8], "big") + 0.5) / 2**64
    share = size % BASE / BASE
    return priority / (1 - priority) * (1 - share) / share, digest


def controlled(key: bytes, population: tuple[int, int], cells: dict[Cell, tuple[int, int]]
               ) -> tuple[dict[Cell, int], Rows]:
    """`cells` (each its size and `set_digest`) of `population` (its size and digest, which
    the cells add up to) rounded from the top (module docstring): the population as `drawn`
    says, then each level of the tree (`_path`) `apportioned` its parent's figure; and the
    criteria's rows, each the evaluated figure `apportioned` among that criterion's verdicts."""
    placed = [(_path(cell), cell, size, digest) for cell, (size, digest) in cells.items()]
    found = _shared_out(key, drawn(key, *population), placed, 0)
    evaluated = sum(n for cell, n in found.items() if cell != ("pruned",))
    parts: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    for cell, (size, digest) in cells.items():
        for item in cell[2:]:
            criterion, _, verdict = item.partition("=")
            n, d = parts[criterion].get(verdict, (0, 0))
            parts[criterion][verdict] = n + size, d + digest
    return found, {criterion: apportioned(key, evaluated, {v: (n, d % MODULUS) for v, (n, d) in by.items()})
                   for criterion, by in parts.items()}


Placed = list[tuple[tuple[object, ...], Cell, int, int]]  # cells with their paths, sizes, digests


def _path(cell: Cell) -> tuple[object, ...]:
    """The nodes of the tree from the top down to `cell`: pruned or evaluated, the verdict,
    the site, the cell (its criteria's verdicts, one level: the criteria's rows are rounded
    apart, `controlled`)."""
    return (cell,) if cell == ("pruned",) else ("evaluated", cell[:1], cell[:2], cell)


def _shared_out(key: bytes, total: int, cells: Placed, depth: int) -> dict[Cell, int]:
    """The `cells` under one node of the tree whose rounded size is `total`: its parts (the
    nodes at `depth` of their paths) apportioned `total`, each then its own cells."""
    groups: dict[object, Placed] = defaultdict(list)
    sums: dict[object, tuple[int, int]] = {}
    for placed in cells:
        node = placed[0][depth]
        groups[node].append(placed)
        n, d = sums.get(node, (0, 0))
        sums[node] = n + placed[2], d + placed[3]
    found: dict[Cell, int] = {}
    for node, n in apportioned(key, total, {node: (n, d % MODULUS) for node, (n, d) in sums.items()}).items():
        under = groups[node]
        if len(under) == 1:  # the cell itself, or its only cell below
            found[under[0][1]] = n
        else:
            found.update(_shared_out(key, n, under, depth + 1))
    return found


Key = tuple[str, str, tuple[str, ...]]  # a cell while counting: verdict, site, criteria's verdicts


@dataclass(slots=True)
class Tally:
    """A study's cells being counted (by `Key`): per cell, its size and `set_digest`."""

    cells: dict[Key, list[int]] = field(default_factory=dict)

    def add(self, cell: Key, digest: int) -> None:
        found = self.cells.get(cell)
        if found is None:
            self.cells[cell] = [1, digest]
        else:
            found[0] += 1
            found[1] += digest

    def rounded(self, key: bytes, population: tuple[int, int], trial: Trial) -> tuple[dict[Cell, int], Rows]:
        """The `controlled` cells of `trial`, the pruned one the rest of `population` (its
        size, its digest)."""
        size, digest = population
        found: dict[Cell, tuple[int, int]] = {}
        for (verdict, site, verdicts), (n, d) in self.cells.items():
            size, digest = size - n, digest - d
            cell = (verdict, site, *(f"{c.key}={v}" for c, v in zip(trial.criteria, verdicts, strict=True)))
            found[cell] = n, d % MODULUS
        if size:
            found[("pruned",)] = size, digest % MODULUS
        return controlled(key, population, found)


@dataclass(slots=True)
class Cells:
    """The cells of patients against trials of `catalogue` on `today`, at the least cost per
    pair (the daily pass places ~90 million at 100,000 patients and 10,000 trials): each
    criterion judged once per record and rule (`judged`), a verdict worked out once per
    combination of its criteria's verdicts, the nearest recruiting site of a study once per
    home (patients share postal codes)."""

    catalogue: match_catalogue.Catalogue
    today: date
    rules: dict[str, tuple[str, ...]] = field(default_factory=dict)  # by study
    verdicts: dict[tuple[str, ...], str] = field(default_factory=dict)
    sites: dict[tuple[str, Point | None], str] = field(default_factory=dict)

    def of(self, trial: Trial, record: Record, origin: Point | None) -> Key:
        """The cell of a patient (living at `origin`: `match.home`) the index leaves for
        `trial`: verdict, nearest recruiting site, each criterion's verdict."""
        return next(self.each((trial,), record, origin))

    def each(self, trials: Iterable[Trial], record: Record, origin: Point | None) -> Iterator[Key]:
        """`of` each of `trials`, in one loop (its lookups made once)."""
        known, rules_of, verdicts_of, sites = record.verdicts.__getitem__, self.rules, self.verdicts, self.sites
        for trial in trials:
            rules = rules_of.get(trial.study)
            if rules is None:
                rules = rules_of[trial.study] = tuple(c.rule for c in trial.criteria)
            try:  # each rule judged already for this record (by another trial): no call per criterion
                verdicts = tuple(map(known, rules))
            except KeyError:
                verdicts = judged(trial, record)
            verdict = verdicts_of.get(verdicts)
            if verdict is None:
                verdict = verdicts_of[verdicts] = overall(verdicts)
            if verdict == INELIGIBLE:
                yield verdict, NO_SITE, verdicts
                continue
            site = sites.get((trial.study, origin))
            if site is None:
                found, _ = self.catalogue.nearest(trial.study, origin, self.today)
                site = sites[(trial.study, origin)] = found.location if found is not None else NO_SITE
            yield verdict, site, verdicts


async def figures(ctx: Context, trial: Trial, catalogue: match_catalogue.Catalogue, today: date,
                  key: bytes) -> Figures:
    """The study's snapshot of `today`: the daily pass's (figures_pass.py), else computed on
    the first call of the day. The call that computes it reads the records of every Patient
    it counts and notes each on its audit trail; a call served from the snapshot reads no
    record, and its AuditEvent names the study: the figures it gave are those of the
    snapshot of its day, whose pass's or computing call's events name the patients
    (docs/matching.md, "Audit")."""
    record = f"{study_access.FIGURES_PREFIX}{trial.study}"
    held = await subscriptions.one(ctx.store, record)
    kept = _SNAPSHOTS.setdefault(match_catalogue.shared(ctx), {})
    cached = kept.get(trial.study)
    # The parsed copy serves only while the store holds the same record: an erasure drops it.
    if cached is not None and cached[0] == held and cached[1].day == today.isoformat():
        return cached[1]
    body, found, read = await _shared(ctx, trial, catalogue, today, key, record, held)
    kept[trial.study] = body, found
    for version in read:
        note(ctx, version)
    return found


async def _shared(ctx: Context, trial: Trial, catalogue: match_catalogue.Catalogue, today: date,
                  key: bytes, record: str, held: bytes | None
                  ) -> tuple[bytes, Figures, tuple[Version, ...]]:
    """The day's snapshot as the store holds it (`record`, now `held`) for every server
    process, and the Patients this call read to compute it (none when it was stored): the
    first process to compute it stores it (compare-and-set), the others read it, so that a
    call landing on another worker, or after a restart, answers as the first did."""
    if held is not None and (stored := loaded(held)).day == today.isoformat():
        return held, stored, ()
    computed = await _compute(ctx, trial, catalogue, today, key)
    body = dumped(computed)
    try:
        await ctx.store.commit([Outbox(put=((record, body),), expect=((record, held),))])
    except FhirError as error:
        if error.kind is not Kind.PRECONDITION_FAILED:
            raise
        again = await subscriptions.one(ctx.store, record)  # another process stored the day's first
        if again is not None and (stored := loaded(again)).day == computed.day:
            return again, stored, computed.counted  # its records were read all the same
    return body, computed, computed.counted


def dumped(found: Figures) -> bytes:
    return orjson.dumps({"day": found.day, "cells": [[list(c), n] for c, n in found.cells.items()],
                         "texts": found.texts, "sites": list(found.sites), "criteria": found.criteria})


def loaded(body: bytes) -> Figures:
    """A stored snapshot; one stored before the criteria's rows were rounded apart (no
    "criteria") is of no day, so that it is computed again."""
    data = orjson.loads(body)
    return Figures(data["day"] if "criteria" in data else "", {tuple(c): n for c, n in data["cells"]},
                   data["texts"], tuple(data["sites"]), (), data.get("criteria", {}))


async def _compute(ctx: Context, trial: Trial, catalogue: match_catalogue.Catalogue, today: date,
                   key: bytes) -> Figures:
    index = TrialIndex([trial])
    found = await inverse_population.population(ctx, index, today)
    tally, cells = Tally(), Cells(catalogue, today)
    for patient in sorted(found.records):
        record = read_record(found.records[patient], today)
        tally.add(cells.of(trial, record, home(record)), member_digest(key, patient))
    population = len(found.counted), set_digest(key, (v.id for v in found.counted))
    return snapshot(trial, catalogue, today, tally.rounded(key, population, trial), found.counted)


def snapshot(trial: Trial, catalogue: match_catalogue.Catalogue, today: date,
             rounded: tuple[dict[Cell, int], Rows], counted: tuple[Version, ...] = ()) -> Figures:
    """The study's Figures of `today` from its `rounded` cells and criteria's rows."""
    cells, criteria = rounded
    evaluated = any(c != ("pruned",) for c in cells)
    texts = {c.key: c.text for c in trial.criteria} if evaluated else {}
    sites = tuple(sorted({s.location for s in catalogue.sites[trial.study]}))
    return Figures(today.isoformat(), cells, texts, sites, counted, criteria)


def parameters(found: Figures) -> list[dict[str, Any]]:
    """The figures as Parameters parameters: sums of rounded cells, and the criteria's rows
    as rounded. A row whose cells all rounded to 0 is left out, as when no patient is in
    it: the criteria when the evaluated figure is 0 (each row adds up to it), a site not the
    study's own (none placed near the patient) whose figure is 0; the study's own sites are
    always listed."""
    evaluated = {cell: n for cell, n in found.cells.items() if cell != ("pruned",)}
    verdicts: Counter[str] = Counter()
    per_site: Counter[str] = Counter()
    for (verdict, site, *_), n in evaluated.items():
        verdicts[verdict] += n
        if verdict != INELIGIBLE:
            per_site[site] += n
    pruned = found.cells.get(("pruned",), 0)
    total = sum(evaluated.values())
    out = [_count("population", pruned + total), _count("pruned", pruned), _count("evaluated", total),
           _count("eligible", verdicts[ELIGIBLE]), _count("undetermined", verdicts["undetermined"])]
    sites = sorted(set(found.sites) | {s for s, n in per_site.items() if n} - {NO_SITE})
    out += [{"name": "site", "part": [{"name": "site", "valueReference": {"reference": s}},
                                      _count("may-be-eligible", per_site[s])]} for s in sites]
    if per_site[NO_SITE]:
        out.append({"name": "site", "part": [
            {"name": "site", "valueString": "no recruiting site placed near the patient"},
            _count("may-be-eligible", per_site[NO_SITE])]})
    if total:
        out += [{"name": "criterion", "part": [
            {"name": "key", "valueString": key}, {"name": "text", "valueString": found.texts[key]},
            *(_count(v, found.criteria[key].get(v, 0)) for v in VERDICTS)]}
            for key in sorted(found.criteria, key=lambda k: [int(n) for n in k.split(".")])]
    return out


def _count(name: str, value: int) -> dict[str, Any]:
    return {"name": name, "valueInteger": value}
