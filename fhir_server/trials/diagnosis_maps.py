"""Diagnoses coded without ICD-10 (in SNOMED CT, as EHR exports and Synthea send them, or in
our cancer-type codes) placed in ICD-10 by the ConceptMaps that terminology/ ships, so the
ICD-10 rules of eligibility read them (docs/matching.md §1).

A map target counts only when it holds the whole concept (`equivalent`, `equal`, or `wider`,
`subsumes`: the ICD-10 code covers more). A concept the map knows only by `narrower` targets
(malignant tumour of kidney: C64 or C65) is a diagnosis the server cannot place: it is kept
apart, so that it never proves an inclusion diagnosis absent."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from ..terminology_service import load_catalogue
from .eligibility_codes import ICD10, OURS
from .eligibility_format import Coding

ICD10_URL = "http://hl7.org/fhir/sid/icd-10"
MAPS = (f"{OURS}/ConceptMap/snomed-to-icd-10", f"{OURS}/ConceptMap/cancer-type-to-icd-10")
PLACING = frozenset({"equivalent", "equal", "wider", "subsumes"})


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a map puts one concept: the ICD-10 codes that hold it, the ones it only overlaps
    (`narrower`), and the map, `url|version`."""

    placed: tuple[str, ...]
    open: tuple[str, ...]
    mapping: str


@cache
def _placements() -> dict[Coding, Placement]:
    table: dict[Coding, Placement] = {}
    catalogue = load_catalogue()
    for url in MAPS:
        concept_map = catalogue.resource("ConceptMap", url)
        if concept_map is None:  # terminology/ ships both: a missing one is a packaging fault
            raise LookupError(f"ConceptMap {url} is not held")
        mapping = f"{url}|{concept_map['version']}"
        for group in concept_map.get("group", []):
            if group.get("target") not in ICD10:
                continue
            for element in group.get("element", []):
                targets = element.get("target", [])
                table[(group["source"], element["code"])] = Placement(
                    tuple(t["code"] for t in targets if t.get("equivalence") in PLACING),
                    tuple(t["code"] for t in targets if t.get("equivalence") == "narrower"),
                    mapping)
    return table


def place(codings: Iterable[Coding]) -> tuple[tuple[Coding, ...], tuple[str, ...], tuple[str, ...]]:
    """(ICD-10 codings that hold the diagnosis, ICD-10 codes it only overlaps, the maps used,
    `url|version`; all empty when no map knows any of the codings)."""
    table = _placements()
    found = [table[c] for c in codings if c in table]
    placed = sorted({code for p in found for code in p.placed})
    open_codes = () if placed else tuple(sorted({code for p in found for code in p.open}))
    mappings = tuple(sorted({p.mapping for p in found if p.placed or p.open}))
    return tuple((ICD10_URL, code) for code in placed), open_codes, mappings
